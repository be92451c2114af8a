/**
 * Layer-wise learning-rate decay (BEiT, MAE fine-tuning): parameters near the input move less than
 * those near the head, so fine-tuning keeps what pre-training put in the early layers. Layer ids:
 * the patch embedding 0, encoder block i → i + 1, the final norm and the head depth + 1; a
 * parameter at layer l takes lr × decay^(depth + 1 − l).
 */
import type { ModelConfig } from '../model/presets.ts';
import type { ParamStore } from '../model/params.ts';

export function layerId(name: string, depth: number): number {
  if (name.startsWith('encoder.patch.')) return 0;
  const block = /^encoder\.blocks\.(\d+)\./.exec(name);
  if (block) return Number(block[1]) + 1;
  return depth + 1;
}

/** The learning-rate multiplier of every element of `params`' flat buffer; undefined at decay 1 (no scaling). */
export function layerScales(params: ParamStore, m: ModelConfig, decay: number): Float32Array | undefined {
  if (decay === 1) return undefined;
  const out = new Float32Array(params.size);
  for (const s of params.specs) {
    const from = params.offsets.get(s.name)!;
    out.fill(decay ** (m.depth + 1 - layerId(s.name, m.depth)), from, from + params.sizes.get(s.name)!);
  }
  return out;
}
