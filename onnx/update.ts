/**
 * The optimizer step as a graph, for state that lives on a device: AdamW (decoupled weight decay,
 * bias-corrected moments) on every online parameter, then the EMA of the encoder's part into the
 * target, in the same arithmetic as train/adamw.ts and train/ema.ts. Inputs `online/`, `target/`,
 * `adam.m/`, `adam.v/`, `grad/` per parameter and the step's scalars; outputs the same state under
 * `next.`, which the next step takes as its inputs.
 */
import type { ParamSpec } from '../model/vit.ts';
import { GraphBuilder } from './graph.ts';
import { GRAD, ONLINE, TARGET } from './training.ts';

export const MOMENT1 = 'adam.m/';
export const MOMENT2 = 'adam.v/';
export const NEXT = 'next.';

/** The step's scalars, from the schedule and the update count t (train/adamw.ts). */
export interface UpdateScalars {
  /** lr / (1 − β1^t) */
  step_size: number;
  /** 1 / (1 − β2^t) */
  inv_c2: number;
  /** lr · weight decay */
  decay: number;
  /** 1 − EMA momentum */
  ema_rate: number;
}

export function updateGraph(
  online: ParamSpec[],
  encoder: ParamSpec[],
  adam: { beta1: number; beta2: number; eps: number },
): Uint8Array {
  const g = new GraphBuilder('ijepa_update');
  const scalar = (name: keyof UpdateScalars) => g.input(name, 'float32', []);
  const [stepSize, invC2, decay, emaRate] = (['step_size', 'inv_c2', 'decay', 'ema_rate'] as const).map(scalar);
  const inEncoder = new Set(encoder.map((s) => s.name));
  for (const s of online) {
    const input = (prefix: string) => g.input(prefix + s.name, 'float32', s.shape);
    const [p, grad, m, v] = [ONLINE, GRAD, MOMENT1, MOMENT2].map(input);
    const m1 = g.op('Add', [g.op('Mul', [m, g.scalar(adam.beta1)]), g.op('Mul', [grad, g.scalar(1 - adam.beta1)])]);
    const v1 = g.op('Add', [
      g.op('Mul', [v, g.scalar(adam.beta2)]),
      g.op('Mul', [g.op('Mul', [grad, grad]), g.scalar(1 - adam.beta2)]),
    ]);
    const decayed = s.decay ? g.op('Sub', [p, g.op('Mul', [p, decay])]) : p;
    const denom = g.op('Add', [g.op('Sqrt', [g.op('Mul', [v1, invC2])]), g.scalar(adam.eps)]);
    const p1 = g.op('Sub', [decayed, g.op('Div', [g.op('Mul', [m1, stepSize]), denom])]);
    g.output(p1, NEXT + ONLINE + s.name, 'float32', s.shape);
    g.output(m1, NEXT + MOMENT1 + s.name, 'float32', s.shape);
    g.output(v1, NEXT + MOMENT2 + s.name, 'float32', s.shape);
    if (inEncoder.has(s.name)) {
      const t = input(TARGET);
      g.output(
        g.op('Add', [t, g.op('Mul', [g.op('Sub', [p1, t]), emaRate])]),
        NEXT + TARGET + s.name,
        'float32',
        s.shape,
      );
    }
  }
  return g.toBytes('AdamW step and EMA update');
}

/** Σ(θ − θ̄)² and Σθ² over the encoder weights (`online/`, `target/`): the EMA gap's two sums. */
export function gapGraph(encoder: ParamSpec[]): Uint8Array {
  const g = new GraphBuilder('ijepa_ema_gap');
  const sum = (xs: string[]) => xs.reduce((a, b) => g.op('Add', [a, b]));
  const squares = (x: string) => g.op('ReduceSum', [g.op('Mul', [x, x])], { keepdims: 0 });
  const diffs: string[] = [];
  const norms: string[] = [];
  for (const s of encoder) {
    const p = g.input(ONLINE + s.name, 'float32', s.shape);
    const t = g.input(TARGET + s.name, 'float32', s.shape);
    diffs.push(squares(g.op('Sub', [p, t])));
    norms.push(squares(p));
  }
  g.output(sum(diffs), 'diff2', 'float32', []);
  g.output(sum(norms), 'norm2', 'float32', []);
  return g.toBytes('EMA gap');
}
