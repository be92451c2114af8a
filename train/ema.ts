/** Exponential moving average of the context encoder into the target encoder: θ̄ ← m·θ̄ + (1−m)·θ. */
export function emaUpdate(target: Float32Array, online: Float32Array, momentum: number): void {
  const a = 1 - momentum;
  for (let i = 0; i < target.length; i++) target[i] += a * (online[i] - target[i]);
}

/** Relative gap ‖θ − θ̄‖ / ‖θ‖ between online and target weights. */
export function emaGap(online: Float32Array, target: Float32Array): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < online.length; i++) {
    const d = online[i] - target[i];
    diff += d * d;
    norm += online[i] * online[i];
  }
  return Math.sqrt(diff) / Math.sqrt(norm || 1);
}
