//! The responses every operation can give because of the layers around the handlers
//! (authentication, scopes, the failed-authentication limit, `Idempotency-Key`, the body
//! limit, path and query parsing, JSON bodies, store errors), added to the OpenAPI document
//! in one place instead of on each of its operations: a generated client or a fuzzer
//! (schemathesis) then finds every status the server answers declared, with its
//! problem+json schema (issue 16).

use axum::http::Method;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Type};

use mailferry_model::Scope;

use crate::auth::required_scope;
use crate::error::PROBLEM_JSON;

/// Declare on every operation the statuses the middleware and extractors can answer,
/// keeping whatever an operation already says about a status.
pub(crate) fn complete(doc: &mut OpenApi) {
    if let Some(components) = doc.components.as_mut() {
        crate::spec::schemas::refine(components);
    }
    let global_security = doc.security.as_ref().is_some_and(|s| !s.is_empty());
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, op) in ops {
            if let Some(op) = op.as_mut() {
                complete_operation(path, &method, op, global_security);
            }
        }
    }
}

fn complete_operation(path: &str, method: &Method, op: &mut Operation, global_security: bool) {
    // `security: []` on an operation (the probes) means no token is asked for.
    let authenticated = match &op.security {
        Some(s) => !s.is_empty() && !s.iter().all(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({}))),
        None => global_security,
    };
    if !authenticated {
        return;
    }
    if let Some(params) = op.parameters.as_mut() {
        for p in params.iter_mut().filter(|p| p.name.eq_ignore_ascii_case("Idempotency-Key")) {
            p.schema = Some(idempotency_key_schema());
        }
    }
    describe_event_streams(op);
    let params = op.parameters.as_deref().unwrap_or_default();
    let has_path_or_query = params.iter().any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query));
    // Free-text query values (states, times, cursors, formats) are checked by the handler.
    let has_text_query = params.iter().any(|p| {
        p.parameter_in == ParameterIn::Query
            && serde_json::to_value(&p.schema).is_ok_and(|v| v["type"] == "string" || v["type"][0] == "string")
    });
    let has_body = op.request_body.is_some();
    // Idempotency-Key is read on every POST but token creation (idempotency.rs).
    let idempotent_post = *method == Method::POST && !path.starts_with("/api/v1/tokens");

    let mut add = |status: &str, description: &str| {
        op.responses.responses.entry(status.to_owned()).or_insert_with(|| problem(status, description));
    };
    if has_path_or_query || has_body || idempotent_post {
        add("400", "Malformed request: a path or query parameter that does not parse, a bad `Idempotency-Key`, or a body that is not valid JSON (`/problems/bad-request`)");
    }
    add("401", "No bearer token, or not a valid one (`/problems/unauthorized`)");
    if required_scope(method, path) != Scope::Read {
        add("403", "The token's scope does not allow this operation (`/problems/forbidden`)");
    }
    if has_body {
        add("413", "The request body is larger than the server's limit (`/problems/payload-too-large`)");
        add("415", "The request body is not of a media type this operation accepts (`/problems/unsupported-media-type`)");
        add("422", "The request body does not match the schema or its values are invalid; `errors` names each field (`/problems/validation`)");
    }
    if has_text_query {
        add("422", "A query parameter's value is not valid (an unknown state or format, a time that is not RFC 3339, a cursor this API did not return); `errors` names it (`/problems/validation`)");
    }
    if idempotent_post {
        add("409", "The request conflicts with the resource's state, or an `Idempotency-Key` is being used by a request still running (`/problems/conflict`)");
        add("422", "This `Idempotency-Key` was already used with a different request (`/problems/idempotency-key-reused`)");
    }
    add("429", "Too many failed authentications from this address; retry after `Retry-After` seconds (`/problems/too-many-requests`)");
    add("500", "An internal error (the store failed); logged on the server (`/problems/internal`)");
}

fn problem(status: &str, description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    let mut response = ResponseBuilder::new().description(description).content(PROBLEM_JSON, content);
    if status == "429" {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).build();
        response = response.header(
            "Retry-After",
            HeaderBuilder::new().schema(seconds).description(Some("Seconds to wait before trying again")).build(),
        );
    }
    RefOr::T(response.build())
}

/// `Idempotency-Key`: 1–255 visible ASCII characters (idempotency.rs refuses others, 400).
fn idempotency_key_schema() -> RefOr<utoipa::openapi::Schema> {
    RefOr::T(utoipa::openapi::Schema::Object(
        ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[!-~]{1,255}$")).min_length(Some(1)).max_length(Some(255)).build(),
    ))
}

/// A `text/event-stream` response described per event, as SSE-aware tools read it (each
/// event an object of `event`, `data` and `id`), instead of the whole stream as a string.
fn describe_event_streams(op: &mut Operation) {
    for response in op.responses.responses.values_mut() {
        let RefOr::T(response) = response else { continue };
        if let Some(content) = response.content.get_mut("text/event-stream") {
            let event = serde_json::json!({
                "type": "object",
                "required": ["data"],
                "properties": {
                    "event": { "type": "string", "description": "The event type" },
                    "data": { "type": "string", "contentMediaType": "application/json", "description": "The event's JSON document" },
                    "id": { "type": "string", "description": "The event id (`Last-Event-ID` on reconnect)" },
                    "retry": { "type": "integer", "minimum": 0 }
                }
            });
            content.schema = serde_json::from_value(event).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_authenticated_operation_declares_what_the_layers_answer() {
        let doc = serde_json::to_value(crate::openapi()).unwrap();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let public = op["security"].as_array().is_some_and(|s| s.iter().all(|r| r.as_object().is_some_and(|o| o.is_empty())));
                if public {
                    continue;
                }
                checked += 1;
                let responses = op["responses"].as_object().unwrap();
                for status in ["401", "429", "500"] {
                    let content = &responses.get(status).unwrap_or_else(|| panic!("{method} {path}: no {status}"))["content"];
                    assert!(content["application/problem+json"]["schema"]["$ref"] == "#/components/schemas/Problem", "{method} {path} {status}");
                }
                if op.get("requestBody").is_some() {
                    for status in ["400", "413", "415", "422"] {
                        assert!(responses.contains_key(status), "{method} {path}: no {status}");
                    }
                }
                if method != "get" && path != "/api/v1/tokens" && !path.starts_with("/api/v1/tokens/") {
                    assert!(responses.contains_key("403"), "{method} {path}: no 403");
                }
            }
        }
        assert!(checked > 20, "{checked}");
        assert_eq!(doc["paths"]["/api/v1/jobs"]["get"]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap()["schema"]["maximum"], 500);
    }
}
