/**
 * The I-JEPA networks, written once over `Ops<T>`: the ViT encoder (context and EMA target share
 * it) and the narrow predictor. Tensor shapes in comments: B batch, N patches in the grid,
 * L context tokens, M target blocks, T tokens per target block, D encoder width, P predictor width.
 */
import type { Ops } from './ops.ts';
import type { ModelConfig } from './presets.ts';
import { gridOf } from './presets.ts';
import { sincos2d } from './posembed.ts';

export type Init = { kind: 'trunc'; std: number } | { kind: 'zeros' } | { kind: 'ones' };

export interface ParamSpec {
  name: string;
  shape: number[];
  init: Init;
  /** Biases, norms and other 1-D tensors get no weight decay. */
  decay: boolean;
}

const STD = 0.02;

function linearSpecs(prefix: string, inDim: number, outDim: number, std = STD): ParamSpec[] {
  return [
    { name: `${prefix}.w`, shape: [inDim, outDim], init: { kind: 'trunc', std }, decay: true },
    { name: `${prefix}.b`, shape: [outDim], init: { kind: 'zeros' }, decay: false },
  ];
}

function normSpecs(prefix: string, dim: number): ParamSpec[] {
  return [
    { name: `${prefix}.g`, shape: [dim], init: { kind: 'ones' }, decay: false },
    { name: `${prefix}.b`, shape: [dim], init: { kind: 'zeros' }, decay: false },
  ];
}

function blockSpecs(prefix: string, dim: number, mlpRatio: number, layer: number): ParamSpec[] {
  // The reference rescales the residual-branch outputs by 1/sqrt(2·layer) at init.
  const residualStd = STD / Math.sqrt(2 * (layer + 1));
  const hidden = Math.round(dim * mlpRatio);
  return [
    ...normSpecs(`${prefix}.norm1`, dim),
    ...linearSpecs(`${prefix}.attn.qkv`, dim, 3 * dim),
    ...linearSpecs(`${prefix}.attn.proj`, dim, dim, residualStd),
    ...normSpecs(`${prefix}.norm2`, dim),
    ...linearSpecs(`${prefix}.mlp.fc1`, dim, hidden),
    ...linearSpecs(`${prefix}.mlp.fc2`, hidden, dim, residualStd),
  ];
}

export function encoderSpecs(m: ModelConfig): ParamSpec[] {
  const patchDim = m.patchSize * m.patchSize * m.channels;
  const specs = [...linearSpecs('encoder.patch', patchDim, m.dim)];
  for (let i = 0; i < m.depth; i++) specs.push(...blockSpecs(`encoder.blocks.${i}`, m.dim, m.mlpRatio, i));
  specs.push(...normSpecs('encoder.norm', m.dim));
  return specs;
}

/**
 * A narrow transformer over the context tokens and one mask token per position to fill in, with
 * the predictor's geometry (predDim, predDepth, predHeads): I-JEPA's predictor (out: the encoder
 * width) and MAE's decoder (out: a patch's pixels) are both this.
 */
function fillerSpecs(prefix: string, m: ModelConfig, out: number): ParamSpec[] {
  const specs = [
    ...linearSpecs(`${prefix}.embed`, m.dim, m.predDim),
    {
      name: `${prefix}.maskToken`,
      shape: [1, 1, m.predDim],
      init: { kind: 'trunc', std: STD },
      decay: false,
    } satisfies ParamSpec,
  ];
  for (let i = 0; i < m.predDepth; i++) specs.push(...blockSpecs(`${prefix}.blocks.${i}`, m.predDim, m.mlpRatio, i));
  specs.push(...normSpecs(`${prefix}.norm`, m.predDim), ...linearSpecs(`${prefix}.proj`, m.predDim, out));
  return specs;
}

export function predictorSpecs(m: ModelConfig): ParamSpec[] {
  return fillerSpecs('predictor', m, m.dim);
}

/** MAE's decoder: the predictor's geometry, regressing each masked patch's p·p·C pixels. */
export function decoderSpecs(m: ModelConfig): ParamSpec[] {
  return fillerSpecs('decoder', m, m.patchSize * m.patchSize * m.channels);
}

/** The projector's hidden width and output width (LeJEPA's minimal recipe: MLP 2048-2048-16). */
export const PROJECTOR_HIDDEN = 2048;
export const PROJECTOR_DIM = 16;
const BN_EPS = 1e-5;

/** The objectives (train/config.ts) and which online heads each trains beside the encoder. */
export type Objective = 'ijepa' | 'lejepa' | 'hybrid' | 'mae';

/**
 * LeJEPA's projector on the pooled embedding: Linear–BatchNorm–ReLU twice, then a linear map to
 * PROJECTOR_DIM, where invariance and SIGReg are measured. The loss acts on the projection, so
 * the encoder need not be exactly invariant to the augmentations.
 */
export function projectorSpecs(m: ModelConfig): ParamSpec[] {
  const h = PROJECTOR_HIDDEN;
  return [
    ...linearSpecs('projector.fc1', m.dim, h),
    ...normSpecs('projector.bn1', h),
    ...linearSpecs('projector.fc2', h, h),
    ...normSpecs('projector.bn2', h),
    ...linearSpecs('projector.fc3', h, PROJECTOR_DIM),
  ];
}

export function project<T>(ops: Ops<T>, pooled: T): T {
  const layer = (x: T, i: number) =>
    ops.relu(
      ops.batchNorm(
        ops.linear(x, `projector.fc${i}.w`, `projector.fc${i}.b`),
        BN_EPS,
        `projector.bn${i}.g`,
        `projector.bn${i}.b`,
      ),
    );
  return ops.linear(layer(layer(pooled, 1), 2), 'projector.fc3.w', 'projector.fc3.b');
}

/** The online parameters beside the encoder: the predictor (I-JEPA), the projector (LeJEPA), both, or MAE's decoder. */
export function headSpecs(m: ModelConfig, objective: Objective = 'ijepa'): ParamSpec[] {
  if (objective === 'lejepa') return projectorSpecs(m);
  if (objective === 'mae') return decoderSpecs(m);
  if (objective === 'hybrid') return [...predictorSpecs(m), ...projectorSpecs(m)];
  return predictorSpecs(m);
}

export function countParams(specs: ParamSpec[]): number {
  return specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}

/** Additive attention bias from a key mask [B, L] (1 = real token): 0 for real keys, -1e9 for padding. */
function keyBias<T>(ops: Ops<T>, keyMask: T): T {
  return ops.reshape(ops.scale(ops.addScalar(keyMask, -1), 1e9), [0, 1, 1, -1]);
}

/** Pre-norm transformer block on x [B, L, W]; `bias` [B, 1, 1, L] masks padded keys. */
function block<T>(ops: Ops<T>, x: T, prefix: string, heads: number, width: number, eps: number, bias?: T): T {
  const hd = width / heads;
  const h = ops.layerNorm(x, eps, `${prefix}.norm1.g`, `${prefix}.norm1.b`);
  // One fused q|k|v projection (the reference's layout), split into heads of [B, H, L, hd].
  const [q, k, v] = ops.splitHeads(ops.linear(h, `${prefix}.attn.qkv.w`, `${prefix}.attn.qkv.b`), heads);
  const kT = ops.transpose(k, [0, 1, 3, 2]); // [B,H,hd,L]
  let logits = ops.matmul(ops.scale(q, 1 / Math.sqrt(hd)), kT); // [B,H,L,L]
  if (bias) logits = ops.add(logits, bias);
  const attn = ops.matmul(ops.softmax(logits), v); // [B,H,L,hd]
  const merged = ops.mergeHeads(attn, heads);
  x = ops.add(x, ops.linear(merged, `${prefix}.attn.proj.w`, `${prefix}.attn.proj.b`));
  const g = ops.layerNorm(x, eps, `${prefix}.norm2.g`, `${prefix}.norm2.b`);
  const mlp = ops.linear(
    ops.gelu(ops.linear(g, `${prefix}.mlp.fc1.w`, `${prefix}.mlp.fc1.b`)),
    `${prefix}.mlp.fc2.w`,
    `${prefix}.mlp.fc2.b`,
  );
  return ops.add(x, mlp);
}

/** A view's patch grid, when it is not the model's (a low-resolution local crop). */
export interface ViewGrid {
  rows: number;
  cols: number;
}

function positions<T>(ops: Ops<T>, key: string, width: number, m: ModelConfig, view?: ViewGrid): T {
  const full = gridOf(m);
  const { rows, cols } = view ?? full;
  const name = view ? `${key}.pos.${rows}x${cols}` : `${key}.pos`;
  return ops.constant(name, sincos2d(width, rows, cols, full), [rows * cols, width]);
}

export interface ContextSelection<T> {
  /** [B, L] patch indices to keep. */
  idx: T;
  /** [B, L] 1 = real token, 0 = padding. */
  mask: T;
}

/**
 * Encoder up to its blocks: patches [B, N, p·p·C] → the residual stream after each block,
 * [B, N, D] each, or [B, L, D] for a context selection. Positions are added before selection,
 * so kept tokens remember where they came from.
 */
export function encoderStream<T>(
  ops: Ops<T>,
  m: ModelConfig,
  patches: T,
  ctx?: ContextSelection<T>,
  view?: ViewGrid,
): T[] {
  const { rows, cols } = view ?? gridOf(m);
  let x = ops.linear(patches, 'encoder.patch.w', 'encoder.patch.b');
  x = ops.add(x, ops.reshape(positions(ops, 'encoder', m.dim, m, view), [1, rows * cols, m.dim]));
  let bias: T | undefined;
  if (ctx) {
    x = ops.gatherTokens(x, ctx.idx);
    bias = keyBias(ops, ctx.mask);
  }
  const stream: T[] = [];
  for (let i = 0; i < m.depth; i++)
    stream.push((x = block(ops, x, `encoder.blocks.${i}`, m.heads, m.dim, m.eps, bias)));
  return stream;
}

/** The encoder's output tokens: its final norm on the last block's output. */
export function encoderOutput<T>(ops: Ops<T>, m: ModelConfig, stream: T[]): T {
  return ops.layerNorm(stream[stream.length - 1], m.eps, 'encoder.norm.g', 'encoder.norm.b');
}

/**
 * Encoder: patches [B, N, p·p·C] → tokens [B, N, D], or [B, L, D] for a context selection; a view
 * on another grid (a local crop) has that grid's tokens.
 */
export function encode<T>(ops: Ops<T>, m: ModelConfig, patches: T, ctx?: ContextSelection<T>, view?: ViewGrid): T {
  return encoderOutput(ops, m, encoderStream(ops, m, patches, ctx, view));
}

export interface PredictorInputs<T> {
  /** Context encoder output [B, L, D]. */
  context: T;
  /** [B, L] patch indices of the context tokens. */
  ctxIdx: T;
  /** [M·B, L + T] key mask over context (repeated per target block) then target tokens (all 1). */
  keyMask: T;
  /** [M·B, T] patch indices of each target block, block-major. */
  tgtIdx: T;
  numTargets: number;
}

/** Context tokens + one mask token per target position, through the `prefix` network → its outputs at the targets [M·B, T, out]. */
function fill<T>(ops: Ops<T>, m: ModelConfig, prefix: string, p: PredictorInputs<T>): T {
  const pos = positions(ops, prefix, m.predDim, m);
  let x = ops.add(ops.linear(p.context, `${prefix}.embed.w`, `${prefix}.embed.b`), ops.gatherRows(pos, p.ctxIdx)); // [B,L,P]
  x = ops.repeatBatch(x, p.numTargets); // [M·B, L, P]
  const queries = ops.add(ops.param(`${prefix}.maskToken`), ops.gatherRows(pos, p.tgtIdx)); // [M·B, T, P]
  x = ops.concat([x, queries], 1);
  const bias = keyBias(ops, p.keyMask);
  for (let i = 0; i < m.predDepth; i++) x = block(ops, x, `${prefix}.blocks.${i}`, m.predHeads, m.predDim, m.eps, bias);
  x = ops.layerNorm(x, m.eps, `${prefix}.norm.g`, `${prefix}.norm.b`);
  return ops.linear(ops.lastTokens(x, p.tgtIdx), `${prefix}.proj.w`, `${prefix}.proj.b`);
}

/** Predictor: context tokens + one mask token per target position → predicted embeddings [M·B, T, D]. */
export function predict<T>(ops: Ops<T>, m: ModelConfig, p: PredictorInputs<T>): T {
  return fill(ops, m, 'predictor', p);
}

/**
 * MAE's decoder: the visible patches' tokens + a mask token at every masked position → predicted
 * pixels of the masked patches [B, T, p·p·C] (one "target block": the masked patches).
 */
export function decode<T>(ops: Ops<T>, m: ModelConfig, p: Omit<PredictorInputs<T>, 'numTargets'>): T {
  return fill(ops, m, 'decoder', { ...p, numTargets: 1 });
}

/** MAE's variance floor of the per-patch pixel normalisation. */
const PIXEL_EPS = 1e-6;

/**
 * What MAE's decoder regresses: the masked patches' pixels [B, T, p·p·C], each patch normalised
 * by its own mean and standard deviation (MAE's norm_pix_loss; biased variance).
 */
export function pixelTargets<T>(ops: Ops<T>, patches: T, maskedIdx: T): T {
  return ops.layerNorm(ops.gatherTokens(patches, maskedIdx), PIXEL_EPS);
}

/**
 * What the predictor regresses, per patch [B, N, D]: the target encoder's output layer-normalised
 * without affine (I-JEPA), or with `layers` > 1 the mean of its last `layers` block outputs, each
 * layer-normalised, normalised again (data2vec 2.0's targets: early in training the top block of
 * a near-random teacher says little that the lower blocks do not say more plainly).
 */
export function targetTokens<T>(ops: Ops<T>, m: ModelConfig, stream: T[], output: T, layers: number): T {
  if (layers === 1) return ops.layerNorm(output, m.eps);
  const top = stream.slice(-layers).map((x) => ops.layerNorm(x, m.eps));
  return ops.layerNorm(
    ops.scale(
      top.reduce((a, b) => ops.add(a, b)),
      1 / layers,
    ),
    m.eps,
  );
}

/** Target tokens [B, N, D] gathered per target block → [M·B, T, D]. */
export function targets<T>(ops: Ops<T>, tokens: T, tgtIdx: T, numTargets: number): T {
  return ops.gatherTokens(ops.repeatBatch(tokens, numTargets), tgtIdx);
}
