/**
 * The explorer page: query an image, search the gallery by patches, see what the model expects
 * behind a hidden block, browse and edit the gallery, and map it. Plain DOM and canvas over the
 * server's own routes; built by esbuild when the server starts (serve/routes/web.ts).
 */
import { CLASS_COLORS } from '../../format/palette.ts';
import { imageUrl, itemUrl } from './paths.ts';

type Box = [number, number, number, number];

interface ModelInfo {
  id: string;
  patches: { size: number; rows: number; cols: number };
  preprocess: { size: number };
  probe: { classes: string[] } | null;
  server: { gallery: boolean; apiKey: boolean; reconstruct: boolean };
}

interface Hit {
  id: string;
  score: number;
  metadata?: Record<string, unknown>;
  matches: { query: [number, number]; gallery: [number, number]; similarity: number }[];
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $('status');
const queryCanvas = $<HTMLCanvasElement>('query');

let info: ModelInfo;
let query: { blob: Blob; bitmap: ImageBitmap } | null = null;
let box: Box | null = null;
let cursor: [number, number] = [0, 0];
let heat: number[][] | null = null;
let galleryOffset = 0;
const PAGE = 12;

function say(text: string, error = false): void {
  status.textContent = text;
  status.className = error ? 'error' : '';
}

/** A server error's own message, or the status line. */
async function failure(r: Response): Promise<string> {
  try {
    const body = (await r.json()) as { error?: string };
    return body.error ?? `${r.status} ${r.statusText}`;
  } catch {
    return `${r.status} ${r.statusText}`;
  }
}

async function api(path: string, init: RequestInit = {}): Promise<Response> {
  const key = $<HTMLInputElement>('key').value;
  const headers = new Headers(init.headers);
  if (key) headers.set('x-api-key', key);
  const r = await fetch(path, { ...init, headers });
  if (!r.ok) throw new Error(await failure(r));
  return r;
}

const bitmaps = new Map<string, Promise<ImageBitmap>>();
function galleryBitmap(id: string): Promise<ImageBitmap> {
  let b = bitmaps.get(id);
  if (!b) {
    b = fetch(imageUrl(id))
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`no picture for ${id}`))))
      .then((blob) => createImageBitmap(blob));
    bitmaps.set(id, b);
  }
  return b;
}

// --- the query image ---

function drawQuery(): void {
  const ctx = queryCanvas.getContext('2d')!;
  const { rows, cols } = info.patches;
  const w = queryCanvas.width;
  const cell = w / cols;
  ctx.clearRect(0, 0, w, w);
  if (!query) return;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(query.bitmap, 0, 0, w, w);
  if (heat) {
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        const v = heat[r][c];
        if (Number.isNaN(v)) continue;
        ctx.fillStyle = `rgba(255, 60, 0, ${Math.max(0, Math.min(1, v)) * 0.65})`;
        ctx.fillRect(c * cell, r * cell, cell, cell);
      }
  }
  ctx.strokeStyle = 'rgba(255,255,255,0.45)';
  ctx.lineWidth = 1;
  for (let i = 1; i < cols; i++) {
    ctx.beginPath();
    ctx.moveTo(i * cell, 0);
    ctx.lineTo(i * cell, w);
    ctx.moveTo(0, i * cell);
    ctx.lineTo(w, i * cell);
    ctx.stroke();
  }
  ctx.strokeStyle = '#ffd400';
  ctx.lineWidth = 3;
  if (box) ctx.strokeRect(box[1] * cell, box[0] * cell, (box[3] - box[1]) * cell, (box[2] - box[0]) * cell);
  if (document.activeElement === queryCanvas) {
    ctx.strokeStyle = '#2563eb';
    ctx.lineWidth = 2;
    ctx.strokeRect(cursor[1] * cell + 2, cursor[0] * cell + 2, cell - 4, cell - 4);
  }
}

function setBox(b: Box | null): void {
  box = b;
  heat = null;
  $('selection').textContent = b
    ? `Selected patches: rows ${b[0]}–${b[2] - 1}, columns ${b[1]}–${b[3] - 1} (${(b[2] - b[0]) * (b[3] - b[1])} patches).`
    : 'No patches selected.';
  for (const id of ['search-box', 'hide']) $<HTMLButtonElement>(id).disabled = !b || !query;
  drawQuery();
}

async function setQuery(blob: Blob): Promise<void> {
  try {
    query = { blob, bitmap: await createImageBitmap(blob) };
  } catch {
    // Not something the browser decodes: the server still says what is wrong with it.
    query = null;
  }
  heat = null;
  $('hits').replaceChildren();
  $('recon').replaceChildren();
  $('recon-note').textContent = '';
  $<HTMLButtonElement>('search-all').disabled = !query || !info.server.gallery;
  setBox(null);
  if (!info.probe) {
    $('classes').replaceChildren(
      Object.assign(document.createElement('li'), { textContent: 'This model has no probe head.' }),
    );
    return;
  }
  say('Classifying…');
  try {
    const r = await api('/v1/classify?top_k=5', {
      method: 'POST',
      headers: { 'content-type': blob.type || 'application/octet-stream' },
      body: blob,
    });
    const body = (await r.json()) as { data: { predictions: { label: string; probability: number }[] }[] };
    $('classes').replaceChildren(
      ...body.data[0].predictions.map((p) =>
        Object.assign(document.createElement('li'), {
          textContent: `${p.label} — ${(100 * p.probability).toFixed(1)}%`,
        }),
      ),
    );
    say('Ready.');
  } catch (e) {
    $('classes').replaceChildren();
    say((e as Error).message, true);
  }
}

function cellAt(ev: MouseEvent): [number, number] {
  const rect = queryCanvas.getBoundingClientRect();
  const { rows, cols } = info.patches;
  const c = Math.min(cols - 1, Math.max(0, Math.floor(((ev.clientX - rect.left) / rect.width) * cols)));
  const r = Math.min(rows - 1, Math.max(0, Math.floor(((ev.clientY - rect.top) / rect.height) * rows)));
  return [r, c];
}

const span = (a: [number, number], b: [number, number]): Box => [
  Math.min(a[0], b[0]),
  Math.min(a[1], b[1]),
  Math.max(a[0], b[0]) + 1,
  Math.max(a[1], b[1]) + 1,
];

let dragFrom: [number, number] | null = null;
queryCanvas.addEventListener('mousedown', (ev) => {
  if (!query) return;
  dragFrom = cellAt(ev);
  cursor = dragFrom;
  setBox(span(dragFrom, dragFrom));
});
queryCanvas.addEventListener('mousemove', (ev) => {
  if (dragFrom) setBox(span(dragFrom, cellAt(ev)));
});
window.addEventListener('mouseup', () => {
  dragFrom = null;
});
let anchor: [number, number] | null = null;
queryCanvas.addEventListener('keydown', (ev) => {
  if (!query) return;
  const { rows, cols } = info.patches;
  const moves: Record<string, [number, number]> = {
    ArrowUp: [-1, 0],
    ArrowDown: [1, 0],
    ArrowLeft: [0, -1],
    ArrowRight: [0, 1],
  };
  const mv = moves[ev.key];
  if (mv) {
    ev.preventDefault();
    if (ev.shiftKey && !anchor) anchor = cursor;
    cursor = [Math.min(rows - 1, Math.max(0, cursor[0] + mv[0])), Math.min(cols - 1, Math.max(0, cursor[1] + mv[1]))];
    if (ev.shiftKey && anchor) setBox(span(anchor, cursor));
    else drawQuery();
  } else if (ev.key === 'Enter' || ev.key === ' ') {
    ev.preventDefault();
    anchor = null;
    setBox(span(cursor, cursor));
  } else if (ev.key === 'Escape') setBox(null);
});
queryCanvas.addEventListener('focus', drawQuery);
queryCanvas.addEventListener('blur', drawQuery);

// --- search ---

async function search(withBox: boolean): Promise<void> {
  if (!query) return;
  say('Searching…');
  const params = new URLSearchParams({ k: '8', pooled: 'true' });
  if (withBox && box) params.set('box', box.join(','));
  try {
    const r = await api(`/v1/search?${params}`, {
      method: 'POST',
      headers: { 'content-type': query.blob.type },
      body: query.blob,
    });
    const body = (await r.json()) as { hits: Hit[] };
    await showHits(body.hits);
    say(body.hits.length ? `${body.hits.length} matches.` : 'The gallery is empty.');
  } catch (e) {
    say((e as Error).message, true);
  }
}

async function showHits(hits: Hit[]): Promise<void> {
  const { rows, cols } = info.patches;
  const items = await Promise.all(
    hits.map(async (h, i) => {
      const li = document.createElement('li');
      const button = Object.assign(document.createElement('button'), { className: 'hit', type: 'button' });
      button.setAttribute('aria-pressed', 'false');
      button.dataset.id = h.id;
      const canvas = Object.assign(document.createElement('canvas'), { width: 128, height: 128 });
      const ctx = canvas.getContext('2d')!;
      try {
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(await galleryBitmap(h.id), 0, 0, 128, 128);
      } catch {
        ctx.fillStyle = '#ddd';
        ctx.fillRect(0, 0, 128, 128);
      }
      ctx.strokeStyle = '#ffd400';
      ctx.lineWidth = 2;
      const cw = 128 / cols;
      const ch = 128 / rows;
      for (const m of h.matches) ctx.strokeRect(m.gallery[1] * cw + 1, m.gallery[0] * ch + 1, cw - 2, ch - 2);
      canvas.dataset.matches = JSON.stringify(h.matches.map((m) => m.gallery));
      button.append(
        canvas,
        Object.assign(document.createElement('span'), { textContent: `${i + 1}. ${h.id} (${h.score.toFixed(3)})` }),
      );
      button.addEventListener('click', () => {
        for (const b of $('hits').querySelectorAll('button.hit')) b.setAttribute('aria-pressed', String(b === button));
        heat = Array.from({ length: rows }, () => new Array<number>(cols).fill(Number.NaN));
        const sims = h.matches.map((m) => m.similarity);
        const [lo, hi] = [Math.min(...sims), Math.max(...sims)];
        for (const m of h.matches) heat[m.query[0]][m.query[1]] = hi > lo ? (m.similarity - lo) / (hi - lo) : 1;
        drawQuery();
      });
      li.append(button);
      return li;
    }),
  );
  $('hits').replaceChildren(...items);
}

// --- what is behind the block ---

async function reconstruct(): Promise<void> {
  if (!query || !box) return;
  const note = $('recon-note');
  note.textContent = '';
  say('Predicting behind the selection…');
  try {
    const r = await api(`/v1/reconstruct?box=${box.join(',')}`, {
      method: 'POST',
      headers: { 'content-type': query.blob.type },
      body: query.blob,
    });
    const body = (await r.json()) as {
      patches: { position: [number, number]; neighbours: { id: string; patch: [number, number] }[] }[];
    };
    await drawReconstruction(body.patches);
    say(`Reconstructed ${body.patches.length} patches from their nearest gallery patches.`);
  } catch (e) {
    $('recon').replaceChildren();
    note.textContent = (e as Error).message;
    say((e as Error).message, true);
  }
}

async function drawReconstruction(
  patches: { position: [number, number]; neighbours: { id: string; patch: [number, number] }[] }[],
): Promise<void> {
  const { rows, cols } = info.patches;
  const size = 192;
  const cell = size / cols;
  const panel = (title: string) => {
    const fig = document.createElement('figure');
    const canvas = Object.assign(document.createElement('canvas'), { width: size, height: size });
    fig.append(canvas, Object.assign(document.createElement('figcaption'), { textContent: title }));
    const ctx = canvas.getContext('2d')!;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(query!.bitmap, 0, 0, size, size);
    return { fig, ctx };
  };
  const original = panel('original');
  const context = panel('what the model sees');
  const recon = panel('reconstruction');
  for (const p of patches) {
    const [r, c] = p.position;
    context.ctx.fillStyle = '#808080';
    context.ctx.fillRect(c * cell, r * cell, cell, cell);
    const n = p.neighbours[0];
    if (!n) continue;
    const img = await galleryBitmap(n.id);
    const [sw, sh] = [img.width / cols, img.height / rows];
    recon.ctx.drawImage(img, n.patch[1] * sw, n.patch[0] * sh, sw, sh, c * cell, r * cell, cell, cell);
  }
  recon.fig.dataset.patches = String(patches.length);
  $('recon').replaceChildren(original.fig, context.fig, recon.fig);
}

// --- the gallery ---

async function loadGallery(): Promise<void> {
  try {
    const r = await api(`/v1/gallery?offset=${galleryOffset}&limit=${PAGE}`);
    const body = (await r.json()) as {
      total: number;
      items: { id: string; image: boolean; metadata?: Record<string, unknown> }[];
    };
    const items = body.items.map((it) => {
      const li = document.createElement('li');
      li.dataset.id = it.id;
      if (it.image) li.append(Object.assign(document.createElement('img'), { src: imageUrl(it.id), alt: it.id }));
      const use = Object.assign(document.createElement('button'), { type: 'button', textContent: 'Query' });
      use.addEventListener('click', async () => {
        const r2 = await fetch(imageUrl(it.id));
        if (r2.ok) await setQuery(await r2.blob());
        else say(await failure(r2), true);
      });
      const del = Object.assign(document.createElement('button'), { type: 'button', textContent: 'Delete' });
      del.setAttribute('aria-label', `delete ${it.id}`);
      del.addEventListener('click', async () => {
        try {
          await api(itemUrl(it.id), { method: 'DELETE' });
          bitmaps.delete(it.id);
          say(`Deleted ${it.id}.`);
          await Promise.all([loadGallery(), loadMap()]);
        } catch (e) {
          say((e as Error).message, true);
        }
      });
      li.append(Object.assign(document.createElement('div'), { textContent: it.id }), use, del);
      return li;
    });
    $('gallery').replaceChildren(...items);
    const last = Math.min(body.total, galleryOffset + PAGE);
    $('page').textContent = body.total ? `${galleryOffset + 1}–${last} of ${body.total}` : 'empty';
    $<HTMLButtonElement>('prev').disabled = galleryOffset === 0;
    $<HTMLButtonElement>('next').disabled = last >= body.total;
  } catch (e) {
    say((e as Error).message, true);
  }
}

$('add-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const id = $<HTMLInputElement>('add-id').value;
  const file = $<HTMLInputElement>('add-file').files?.[0];
  if (!file) return;
  try {
    await api(`/v1/gallery?id=${encodeURIComponent(id)}`, {
      method: 'POST',
      headers: { 'content-type': file.type || 'application/octet-stream' },
      body: file,
    });
    bitmaps.delete(id);
    say(`Added ${id}.`);
    await Promise.all([loadGallery(), loadMap()]);
  } catch (e) {
    say((e as Error).message, true);
  }
});
$('prev').addEventListener('click', () => {
  galleryOffset = Math.max(0, galleryOffset - PAGE);
  void loadGallery();
});
$('next').addEventListener('click', () => {
  galleryOffset += PAGE;
  void loadGallery();
});

// --- the map ---

let points: { id: string; x: number; y: number; label: string | null; px: number; py: number }[] = [];

async function loadMap(): Promise<void> {
  const canvas = $<HTMLCanvasElement>('map');
  const ctx = canvas.getContext('2d')!;
  try {
    const body = (await (await api('/v1/map')).json()) as {
      points: { id: string; x: number; y: number; label: string | null }[];
    };
    // Cleared only now: the previous map stays up while the next one is computed.
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const xs = body.points.map((p) => p.x);
    const ys = body.points.map((p) => p.y);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const pad = 12;
    const sx = (x: number) => pad + ((x - x0) / (x1 - x0 || 1)) * (canvas.width - 2 * pad);
    const sy = (y: number) => pad + ((y - y0) / (y1 - y0 || 1)) * (canvas.height - 2 * pad);
    const labels = [...new Set(body.points.map((p) => p.label ?? ''))].sort();
    const color = (l: string | null) => (l === null ? '#555' : CLASS_COLORS[labels.indexOf(l) % CLASS_COLORS.length]);
    points = body.points.map((p) => ({ ...p, px: sx(p.x), py: sy(p.y) }));
    for (const p of points) {
      ctx.fillStyle = color(p.label);
      ctx.beginPath();
      ctx.arc(p.px, p.py, 4, 0, 2 * Math.PI);
      ctx.fill();
    }
    $('legend').replaceChildren(
      ...labels
        .filter((l) => l !== '')
        .map((l) => {
          const li = document.createElement('li');
          const sw = document.createElement('span');
          sw.style.background = color(l);
          li.append(sw, l);
          return li;
        }),
    );
  } catch (e) {
    say((e as Error).message, true);
  }
}

$('map').addEventListener('mousemove', (ev) => {
  const canvas = ev.currentTarget as HTMLCanvasElement;
  const rect = canvas.getBoundingClientRect();
  const x = ((ev.clientX - rect.left) / rect.width) * canvas.width;
  const y = ((ev.clientY - rect.top) / rect.height) * canvas.height;
  let best: (typeof points)[number] | null = null;
  let bestD = 64;
  for (const p of points) {
    const d = (p.px - x) ** 2 + (p.py - y) ** 2;
    if (d < bestD) [best, bestD] = [p, d];
  }
  const tip = $('tooltip');
  if (!best) {
    tip.hidden = true;
    return;
  }
  tip.replaceChildren(
    Object.assign(document.createElement('img'), { src: imageUrl(best.id), alt: '' }),
    `${best.id}${best.label ? ` (${best.label})` : ''}`,
  );
  tip.style.left = `${ev.clientX - rect.left + 12}px`;
  tip.style.top = `${ev.clientY - rect.top + 12}px`;
  tip.hidden = false;
});
$('map').addEventListener('mouseleave', () => {
  $('tooltip').hidden = true;
});

// --- input of the query image ---

$<HTMLInputElement>('file').addEventListener('change', (ev) => {
  const f = (ev.target as HTMLInputElement).files?.[0];
  if (f) void setQuery(f);
});
const drop = $('drop');
drop.addEventListener('dragover', (ev) => {
  ev.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (ev) => {
  ev.preventDefault();
  drop.classList.remove('over');
  const f = ev.dataTransfer?.files[0];
  if (f) void setQuery(f);
});
window.addEventListener('paste', (ev) => {
  const f = [...(ev.clipboardData?.files ?? [])].find((x) => x.type.startsWith('image/'));
  if (f) void setQuery(f);
});
$('search-box').addEventListener('click', () => void search(true));
$('search-all').addEventListener('click', () => void search(false));
$('hide').addEventListener('click', () => void reconstruct());

async function start(): Promise<void> {
  info = ((await (await fetch('/v1/models')).json()) as { data: ModelInfo[] }).data[0];
  $('model').textContent =
    `model ${info.id}: ${info.patches.rows}×${info.patches.cols} patches of ${info.patches.size} px`;
  $('key-label').hidden = !info.server.apiKey;
  for (const id of ['results-panel', 'recon-panel', 'gallery-panel', 'map-panel']) $(id).hidden = !info.server.gallery;
  if (!info.server.reconstruct)
    $('recon-note').textContent = 'This model has no predictor, so it cannot say what is behind a block.';
  drawQuery();
  if (info.server.gallery) await Promise.all([loadGallery(), loadMap()]);
  say('Choose an image to begin.');
  document.body.dataset.ready = 'true';
}

void start();
