// A small throughput chart on a <canvas>: two lines (msgs/s and MB/s), each scaled to its
// own maximum, over the samples of the last minutes. Colours come from the CSS variables
// so the chart follows the light/dark theme.

/**
 * Draw `samples` ([{t, msgs, mbs}], t in ms) spanning `windowMs` up to now.
 */
export function drawThroughput(canvas, samples, windowMs) {
  const css = getComputedStyle(canvas);
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 600;
  const hgt = canvas.clientHeight || 160;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);

  const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const grid = color('--border', '#ccc');
  const muted = color('--muted', '#666');
  const lines = [
    { key: 'msgs', label: 'msgs/s', color: color('--accent', '#1f6feb') },
    { key: 'mbs', label: 'MB/s', color: color('--accent-2', '#bf3989') },
  ];
  const pad = { l: 8, r: 8, t: 22, b: 18 };
  const now = Date.now();
  const x = (t) => pad.l + ((t - (now - windowMs)) / windowMs) * (w - pad.l - pad.r);

  ctx.strokeStyle = grid;
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = Math.round(pad.t + (i * (hgt - pad.t - pad.b)) / 4) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.l, y);
    ctx.lineTo(w - pad.r, y);
    ctx.stroke();
  }
  ctx.fillStyle = muted;
  ctx.font = '11px system-ui, sans-serif';
  ctx.textBaseline = 'bottom';
  ctx.fillText(`${Math.round(windowMs / 60000)} min ago`, pad.l, hgt - 2);
  const nowLabel = 'now';
  ctx.fillText(nowLabel, w - pad.r - ctx.measureText(nowLabel).width, hgt - 2);

  let legendX = pad.l;
  for (const line of lines) {
    const max = Math.max(...samples.map((s) => s[line.key]), 0);
    ctx.fillStyle = line.color;
    ctx.textBaseline = 'top';
    const text = `${line.label} (peak ${max < 10 ? max.toFixed(2) : Math.round(max)})`;
    ctx.fillRect(legendX, 5, 10, 10);
    ctx.fillText(text, legendX + 14, 4);
    legendX += 14 + ctx.measureText(text).width + 16;
    if (samples.length < 2) continue;
    const y = (v) => hgt - pad.b - (max > 0 ? v / max : 0) * (hgt - pad.t - pad.b);
    ctx.strokeStyle = line.color;
    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    ctx.beginPath();
    samples.forEach((s, i) => (i ? ctx.lineTo(x(s.t), y(s[line.key])) : ctx.moveTo(x(s.t), y(s[line.key]))));
    ctx.stroke();
  }
}
