//! The OpenAPI schemas of the job body where the derived ones would not say what
//! [`validate`](super::validate) accepts: the tagged target (derived, its variants forbid
//! the `protocol` that tags them, so no body satisfies it), and the value rules of hosts,
//! lines, secrets, flags, labels and `verify` as patterns and lengths, so that a client
//! generator or a fuzzer can build valid bodies (issue 16). What no schema can say (the
//! network policy, the plaintext allow-list, password or OAuth2) stays a 422.

use std::borrow::Cow;

use utoipa::openapi::schema::{Object, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Discriminator, RefOr};
use utoipa::{PartialSchema, ToSchema};

use super::{ArchiveTargetBody, ImapTargetBody, TargetBody};

/// A schema written as JSON, for what utoipa's builders cannot say (`not`,
/// `propertyNames`); the OpenAPI test sees it, so a typo cannot go unnoticed.
fn json(value: serde_json::Value) -> RefOr<Schema> {
    serde_json::from_value(value).unwrap_or_else(|_| RefOr::T(Schema::Object(Object::default())))
}

/// `target.flags`: RFC 3501 atoms, `\` for system flags, never `\Deleted` or `\Recent`.
pub(super) fn flags() -> RefOr<Schema> {
    let forbidden = serde_json::json!({ "pattern": r"^\\([Dd][Ee][Ll][Ee][Tt][Ee][Dd]|[Rr][Ee][Cc][Ee][Nn][Tt])$" });
    let item = raw(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^\\?[!#$&'+,./0-9:;<=>?@A-Z\[^_`a-z|}~-]{1,128}$"))
            .build(),
        "not",
        forbidden,
    );
    let array = utoipa::openapi::schema::ArrayBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::Array, Type::Null]))
        .items(item)
        .max_items(Some(32))
        .description(Some(
            "IMAP flags set on every copied message (`\\Seen`, keywords; at most 32 of at most 128 bytes); \
             default none. `\\Deleted` is refused (the destination would expunge the copies after the source \
             may have been emptied), and so is `\\Recent` (set by the server only).",
        ));
    RefOr::T(Schema::Array(array.build()))
}

/// `object` with one more keyword utoipa has no field for (`not`, or `allOf` beside
/// `properties`), through its extensions map: one key only, so the document's order is
/// stable.
fn raw(mut object: Object, keyword: &str, value: serde_json::Value) -> Object {
    object.extensions.get_or_insert_with(Default::default).insert(keyword.to_owned(), value);
    object
}

/// A secret as the body takes it.
fn secret_value() -> serde_json::Value {
    serde_json::json!({ "type": "string", "minLength": 1, "maxLength": 8192, "pattern": r"^[^\r\n\u0000]+$" })
}

/// What `validate` checks across fields, added to the derived schemas of the job body:
/// a pin needs TLS; an IMAP target has a password or OAuth2, not both (OAuth2 with `auth`
/// `xoauth2` or `auto`); OAuth2 is an access token alone, or a refresh token with
/// `token_url` and `client_id`.
pub(crate) fn refine(schemas: &mut utoipa::openapi::schema::Components) {
    let pin_needs_tls = serde_json::json!({
        "not": { "required": ["security", "tls_pin"], "properties": { "security": { "const": "none" }, "tls_pin": { "type": "string" } } }
    });
    let absent = serde_json::json!({ "not": {} });
    let password_or_oauth2 = serde_json::json!({
        "oneOf": [
            { "required": ["password"], "properties": { "password": { "type": "string" }, "oauth2": { "type": "null" } } },
            {
                "required": ["oauth2"],
                "properties": {
                    "oauth2": { "type": "object" },
                    "password": { "type": "null" },
                    "auth": { "enum": ["auto", "xoauth2", null] }
                }
            }
        ]
    });
    let line = |max: usize| serde_json::json!({ "type": "string", "minLength": 1, "maxLength": max, "pattern": r"^[^\u0000-\u001f\u007f-\u009f]+$" });
    let oauth2 = serde_json::json!({
        "oneOf": [
            {
                "required": ["access_token"],
                "properties": {
                    "access_token": secret_value(), "refresh_token": { "type": "null" },
                    "token_url": absent, "client_id": absent, "client_secret": absent, "scope": absent
                }
            },
            {
                "required": ["refresh_token", "token_url", "client_id"],
                "properties": {
                    "refresh_token": secret_value(), "access_token": { "type": "null" },
                    "token_url": { "type": "string", "maxLength": 2048, "pattern": r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\u0000-\u0020\u007f-\u009f]*)?$" },
                    "client_id": line(512),
                    "client_secret": { "oneOf": [secret_value(), { "type": "null" }] },
                    "scope": { "oneOf": [line(2048), { "type": "null" }] }
                }
            }
        ]
    });
    let patches = [
        ("SourceBody", "not", pin_needs_tls["not"].clone()),
        ("ImapTargetBody", "allOf", serde_json::json!([password_or_oauth2, pin_needs_tls])),
        ("OAuth2Body", "oneOf", oauth2["oneOf"].clone()),
    ];
    for (name, keyword, value) in patches {
        if let Some(RefOr::T(Schema::Object(object))) = schemas.schemas.get_mut(name) {
            let taken = std::mem::take(object);
            *object = raw(taken, keyword, value);
        }
    }
}

/// `labels`: at most 32; keys 1–63 of `A-Z a-z 0-9 . _ - /` starting with a letter or
/// digit; values one line of at most 256 bytes.
pub(super) fn labels() -> RefOr<Schema> {
    json(serde_json::json!({
        "type": "object",
        "maxProperties": 32,
        "propertyNames": { "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$" },
        "additionalProperties": { "type": "string", "maxLength": 256, "pattern": r"^[^\u0000-\u001f\u007f-\u009f]*$" },
        "description": "Free-form `key: value` labels for filtering (`GET /jobs?label=key:value`), at most 32. \
                        Keys: 1–63 of `A-Z a-z 0-9 . _ - /`, starting with a letter or digit; values one line \
                        of up to 256 bytes."
    }))
}

/// `options.verify`: a level name, a boolean, or null (the default).
pub(super) fn verify() -> RefOr<Schema> {
    json(serde_json::json!({
        "oneOf": [
            { "type": "string", "enum": ["exact", "body", "size", "none"] },
            { "type": "boolean" },
            { "type": "null" }
        ],
        "example": "exact",
        "description": "How each copy read back from the destination is compared with what was sent: `exact` \
                        (default: every byte), `body` (headers may be rewritten by the destination, e.g. Gmail, \
                        Microsoft 365), `size`, or `none` / `false` (no read-back: keep-only jobs at full speed; \
                        refused with a deleting `delete`). `true` means `exact`. Recorded per message; only \
                        verified messages are deleted under `after-verified`."
    }))
}

/// A target variant's derived schema with its `protocol` tag as a required property, so
/// that `additionalProperties: false` does not forbid the tag.
fn tagged(schema: RefOr<Schema>, protocol: &str) -> RefOr<Schema> {
    let RefOr::T(Schema::Object(mut object)) = schema else { return schema };
    let tag = ObjectBuilder::new().schema_type(Type::String).enum_values(Some([protocol])).build();
    object.properties.insert("protocol".into(), RefOr::T(Schema::Object(tag)));
    object.required.insert(0, "protocol".into());
    RefOr::T(Schema::Object(object))
}

impl PartialSchema for TargetBody {
    fn schema() -> RefOr<Schema> {
        let one_of = OneOfBuilder::new()
            .item(utoipa::openapi::Ref::from_schema_name("ImapTargetBody"))
            .item(utoipa::openapi::Ref::from_schema_name("ArchiveTargetBody"))
            .discriminator(Some(Discriminator::with_mapping(
                "protocol",
                [("imap", "#/components/schemas/ImapTargetBody"), ("archive", "#/components/schemas/ArchiveTargetBody")],
            )))
            .description(Some(
                "Where the mail goes: an IMAP folder (`protocol: imap`) or a compliance archive on this server \
                 (`protocol: archive`, created on first use).",
            ));
        RefOr::T(Schema::OneOf(one_of.build()))
    }
}

impl ToSchema for TargetBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TargetBody")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("ImapTargetBody".into(), tagged(<ImapTargetBody as PartialSchema>::schema(), "imap")));
        schemas.push(("ArchiveTargetBody".into(), tagged(<ArchiveTargetBody as PartialSchema>::schema(), "archive")));
        <ImapTargetBody as ToSchema>::schemas(schemas);
        <ArchiveTargetBody as ToSchema>::schemas(schemas);
    }
}
