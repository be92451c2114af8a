/**
 * Which execution provider onnxruntime gives each node of a graph under WebGPU. onnxruntime logs
 * placement only at verbose severity, from native code to the process's stderr, so a child
 * process creates the session and its stderr is parsed.
 */
import { tempDir } from '../tmp.ts';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const CHILD = `
const ort = require(process.argv[1]);
ort.InferenceSession.create(process.argv[2], { executionProviders: ['webgpu'], logSeverityLevel: 0, logVerbosityLevel: 0 })
  .then((s) => s.release(), (e) => { console.error('SESSION ERROR ' + e.message); process.exitCode = 2; });
`;

export interface Placement {
  /** Nodes (op and name) per execution provider. */
  byProvider: Record<string, { op: string; name: string }[]>;
  /** Nodes in the graph, as onnxruntime counted them after optimisation. */
  total: number;
}

export function parsePlacement(log: string): Placement {
  const byProvider: Placement['byProvider'] = {};
  let current: string | null = null;
  let total = 0;
  for (const line of log.split('\n')) {
    const all = line.match(/All nodes placed on \[(\w+)\]\. Number of nodes: (\d+)/);
    if (all) {
      byProvider[all[1]] = [];
      total += Number(all[2]);
      continue;
    }
    const block = line.match(
      /VerifyEachNodeIsAssignedToAnEp\]\s+Node\(s\) placed on \[(\w+)\]\. Number of nodes: (\d+)/,
    );
    if (block) {
      current = block[1];
      byProvider[current] ??= [];
      total += Number(block[2]);
      continue;
    }
    const node = current && line.match(/VerifyEachNodeIsAssignedToAnEp\]\s{3}(\S+) \((.*)\)\s*$/);
    if (node && current) byProvider[current].push({ op: node[1], name: node[2] });
    else current = null;
  }
  return { byProvider, total };
}

export async function placementOf(graph: Uint8Array): Promise<Placement> {
  const dir = tempDir('ijepa-placement-');
  try {
    const path = join(dir, 'graph.onnx');
    writeFileSync(path, graph);
    const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
    const log = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', CHILD, ortPath, path], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('error', reject);
      child.on('close', (code) =>
        code === 0 ? resolve(out) : reject(new Error(`placement probe exited ${code}:\n${out.slice(-3000)}`)),
      );
    });
    const p = parsePlacement(log);
    if (p.total === 0) throw new Error(`no placement in onnxruntime's log:\n${log.slice(-3000)}`);
    return p;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
