/**
 * Small SVG charts rendered to PNG with sharp (librsvg): training curves and bar charts for the
 * README and docs, with no browser or Python. Only what the figures need.
 */
import sharp from 'sharp';
import { CLASS_COLORS } from '../format/palette.ts';

export interface Series {
  name: string;
  points: [number, number][];
  color?: string;
  dashed?: boolean;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (hi <= lo) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

const fmt = (v: number) =>
  Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(0) : String(Number(v.toPrecision(3)));

export interface LinePanel {
  title: string;
  xLabel?: string;
  series: Series[];
  logY?: boolean;
  /** Horizontal reference lines. */
  hlines?: { y: number; label: string; color?: string }[];
}

/** One line chart at (x0, y0) of size w × h, as SVG elements. */
function linePanel(p: LinePanel, x0: number, y0: number, w: number, h: number): string {
  const m = { l: 58, r: 12, t: 26, b: 38 };
  const pts = p.series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y) && (!p.logY || y > 0));
  const ys = [...pts.map(([, y]) => y), ...(p.hlines ?? []).map((l) => l.y)];
  const xs = pts.map(([x]) => x);
  const tf = (y: number) => (p.logY ? Math.log10(y) : y);
  let [ylo, yhi] = [Math.min(...ys.map(tf)), Math.max(...ys.map(tf))];
  if (!Number.isFinite(ylo)) [ylo, yhi] = [0, 1];
  if (yhi - ylo < 1e-12) [ylo, yhi] = [ylo - 0.5, yhi + 0.5];
  const pad = (yhi - ylo) * 0.05;
  ylo -= pad;
  yhi += pad;
  const [xlo, xhi] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [0, 1];
  const sx = (x: number) => x0 + m.l + ((x - xlo) / Math.max(xhi - xlo, 1e-12)) * (w - m.l - m.r);
  const sy = (y: number) => y0 + h - m.b - ((tf(y) - ylo) / (yhi - ylo)) * (h - m.t - m.b);
  const out: string[] = [];
  out.push(
    `<text x="${x0 + w / 2}" y="${y0 + 17}" text-anchor="middle" font-size="13" font-weight="bold">${esc(p.title)}</text>`,
  );
  out.push(
    `<rect x="${x0 + m.l}" y="${y0 + m.t}" width="${w - m.l - m.r}" height="${h - m.t - m.b}" fill="none" stroke="#999"/>`,
  );
  const yt = p.logY ? niceTicks(ylo, yhi, 4).map((e) => 10 ** e) : niceTicks(ylo, yhi);
  for (const t of yt) {
    const y = sy(t);
    if (y < y0 + m.t - 0.5 || y > y0 + h - m.b + 0.5) continue;
    out.push(`<line x1="${x0 + m.l}" x2="${x0 + w - m.r}" y1="${y}" y2="${y}" stroke="#eee"/>`);
    out.push(`<text x="${x0 + m.l - 4}" y="${y + 4}" text-anchor="end" font-size="10">${fmt(t)}</text>`);
  }
  for (const t of niceTicks(xlo, xhi)) {
    const x = sx(t);
    out.push(`<text x="${x}" y="${y0 + h - m.b + 14}" text-anchor="middle" font-size="10">${fmt(t)}</text>`);
  }
  if (p.xLabel)
    out.push(
      `<text x="${x0 + m.l + (w - m.l - m.r) / 2}" y="${y0 + h - 6}" text-anchor="middle" font-size="11">${esc(p.xLabel)}</text>`,
    );
  for (const l of p.hlines ?? []) {
    const y = sy(l.y);
    out.push(
      `<line x1="${x0 + m.l}" x2="${x0 + w - m.r}" y1="${y}" y2="${y}" stroke="${l.color ?? '#555'}" stroke-dasharray="5,3"/>`,
    );
    out.push(
      `<text x="${x0 + w - m.r - 3}" y="${y - 3}" text-anchor="end" font-size="10" fill="${l.color ?? '#555'}">${esc(l.label)}</text>`,
    );
  }
  p.series.forEach((s, i) => {
    const good = s.points.filter(([, y]) => Number.isFinite(y) && (!p.logY || y > 0));
    if (!good.length) return;
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const d = good.map(([x, y], k) => `${k ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    out.push(
      `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6"${s.dashed ? ' stroke-dasharray="6,3"' : ''}/>`,
    );
    if (good.length === 1) out.push(`<circle cx="${sx(good[0][0])}" cy="${sy(good[0][1])}" r="2.5" fill="${color}"/>`);
  });
  if (p.series.length > 1) {
    p.series.forEach((s, i) => {
      const color = s.color ?? PALETTE[i % PALETTE.length];
      const y = y0 + m.t + 12 + i * 13;
      out.push(
        `<line x1="${x0 + m.l + 8}" x2="${x0 + m.l + 24}" y1="${y - 4}" y2="${y - 4}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="4,2"' : ''}/>`,
      );
      out.push(`<text x="${x0 + m.l + 28}" y="${y}" font-size="10">${esc(s.name)}</text>`);
    });
  }
  return out.join('\n');
}

function svg(width: number, height: number, body: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="DejaVu Sans, Arial, sans-serif"><rect width="100%" height="100%" fill="white"/>${body}</svg>`;
}

/** A grid of line charts, `cols` per row, each w × h pixels. */
export function linePanelsSvg(panels: LinePanel[], cols = 2, w = 420, h = 260): string {
  const rows = Math.ceil(panels.length / cols);
  const body = panels.map((p, i) => linePanel(p, (i % cols) * w, Math.floor(i / cols) * h, w, h)).join('\n');
  return svg(cols * w, rows * h, body);
}

export interface Bar {
  label: string;
  value: number;
  /** ± half-width of an error bar. */
  spread?: number;
  color?: string;
}

/** Horizontal bar chart of accuracies (%) with optional reference lines. */
export function barChartSvg(
  title: string,
  bars: Bar[],
  hlines: { value: number; label: string; color?: string }[] = [],
  width = 760,
): string {
  const rowH = 24;
  const m = { l: 230, r: 60, t: 34, b: 30 };
  const height = m.t + m.b + bars.length * rowH;
  const vals = [...bars.map((b) => b.value + (b.spread ?? 0)), ...hlines.map((l) => l.value)];
  const lo = Math.max(
    0,
    Math.floor(Math.min(...bars.map((b) => b.value - (b.spread ?? 0)), ...hlines.map((l) => l.value)) - 5),
  );
  const hi = Math.ceil(Math.max(...vals) + 2);
  const sx = (v: number) => m.l + ((v - lo) / (hi - lo)) * (width - m.l - m.r);
  const out: string[] = [
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  for (const t of niceTicks(lo, hi)) {
    out.push(`<line x1="${sx(t)}" x2="${sx(t)}" y1="${m.t}" y2="${height - m.b}" stroke="#eee"/>`);
    out.push(`<text x="${sx(t)}" y="${height - m.b + 14}" text-anchor="middle" font-size="10">${fmt(t)}</text>`);
  }
  bars.forEach((b, i) => {
    const y = m.t + i * rowH;
    out.push(`<text x="${m.l - 6}" y="${y + rowH / 2 + 4}" text-anchor="end" font-size="11">${esc(b.label)}</text>`);
    out.push(
      `<rect x="${sx(lo)}" y="${y + 4}" width="${Math.max(0, sx(b.value) - sx(lo))}" height="${rowH - 8}" fill="${b.color ?? PALETTE[0]}"/>`,
    );
    if (b.spread)
      out.push(
        `<line x1="${sx(b.value - b.spread)}" x2="${sx(b.value + b.spread)}" y1="${y + rowH / 2}" y2="${y + rowH / 2}" stroke="black" stroke-width="1.5"/>`,
      );
    out.push(
      `<text x="${sx(b.value + (b.spread ?? 0)) + 4}" y="${y + rowH / 2 + 4}" font-size="10">${b.value.toFixed(1)}</text>`,
    );
  });
  for (const l of hlines) {
    out.push(
      `<line x1="${sx(l.value)}" x2="${sx(l.value)}" y1="${m.t}" y2="${height - m.b}" stroke="${l.color ?? '#555'}" stroke-dasharray="5,3"/>`,
    );
    out.push(
      `<text x="${sx(l.value) + 3}" y="${m.t - 3}" font-size="10" fill="${l.color ?? '#555'}">${esc(l.label)}</text>`,
    );
  }
  return svg(width, height, out.join('\n'));
}

export async function writePng(svgText: string, path: string): Promise<void> {
  await sharp(Buffer.from(svgText)).png().toFile(path);
}

/** Scatter plot of labeled 2-D points, one colour per class, with a legend. */
export function scatterSvg(
  title: string,
  xy: Float64Array | number[][],
  labels: ArrayLike<number>,
  classes: string[],
  size = 640,
): string {
  const n = labels.length;
  const px = (i: number) =>
    Array.isArray(xy) ? (xy as number[][])[i] : [(xy as Float64Array)[2 * i], (xy as Float64Array)[2 * i + 1]];
  const xs = Array.from({ length: n }, (_, i) => px(i)[0]);
  const ys = Array.from({ length: n }, (_, i) => px(i)[1]);
  const [xlo, xhi, ylo, yhi] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const m = { l: 16, r: 150, t: 30, b: 16 };
  const sx = (x: number) => m.l + ((x - xlo) / Math.max(xhi - xlo, 1e-12)) * (size - m.l - m.r);
  const sy = (y: number) => size - m.b - ((y - ylo) / Math.max(yhi - ylo, 1e-12)) * (size - m.t - m.b);
  const out = [
    `<text x="${size / 2}" y="20" text-anchor="middle" font-size="12" font-weight="bold">${esc(title)}</text>`,
  ];
  for (let i = 0; i < n; i++)
    out.push(
      `<circle cx="${sx(xs[i]).toFixed(1)}" cy="${sy(ys[i]).toFixed(1)}" r="2.2" fill="${CLASS_COLORS[labels[i] % CLASS_COLORS.length]}" fill-opacity="0.75"/>`,
    );
  classes.forEach((c, k) => {
    const y = m.t + 14 + k * 16;
    out.push(`<circle cx="${size - m.r + 14}" cy="${y - 4}" r="5" fill="${CLASS_COLORS[k % CLASS_COLORS.length]}"/>`);
    out.push(`<text x="${size - m.r + 24}" y="${y}" font-size="11">${esc(c)}</text>`);
  });
  return svg(size, size, out.join('\n'));
}
