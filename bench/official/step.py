"""The official PyTorch I-JEPA training step (facebookresearch/ijepa), timed on request: a row of
`npm run bench:train` (BENCH_OFFICIAL=<a checkout of that repository>).

The model, masks and step are the repository's own code, at the bench's shapes: its
VisionTransformer (vit-tiny's width and depth: d 192, depth 6, 3 heads, patch 4 on 32×32) and
vit_predictor (96 wide, 3 deep), its MaskCollator (4 targets of 15-20%, context 85-100%, aspect
0.75-1.5, contexts truncated to the batch's shortest), AdamW with its parameter groups, and the
body of train_step in src/train.py: target forward with layer norm, context encoder and predictor,
smooth-L1, backward, optimizer step, EMA update. fp32, no autocast.

Protocol (stdin/stdout, one JSON object per line): a line `{"seed": n}` runs one step on batch n
(random images, masks drawn by the collator) and answers {"wall", "cpu", "ctx", "tgt", "targets"}:
seconds of the step alone (batch and mask creation excluded), process CPU seconds over it, context
tokens per image, tokens per target block, target blocks. A line `{"gemm": true}` times PyTorch's
own matmul on the bench's ceiling shapes (the encoder's MLP, 2048×192·192×768 then ·768×192,
8 deep, 5 times) and answers {"wall", "cpu", "flops"}.

  python3 bench/official/step.py <checkout> [--batch 128] [--threads 1]
"""
import argparse
import copy
import json
import sys
import time
from functools import partial

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('checkout')
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    sys.path.insert(0, a.checkout)
    from src.masks.multiblock import MaskCollator
    from src.masks.utils import apply_masks
    from src.models.vision_transformer import VisionTransformer, vit_predictor
    from src.utils.tensors import repeat_interleave_batch

    torch.manual_seed(0)
    encoder = VisionTransformer(img_size=[32], patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4,
                                qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    predictor = vit_predictor(num_patches=encoder.patch_embed.num_patches, embed_dim=192, predictor_embed_dim=96,
                              depth=3, num_heads=3)
    target_encoder = copy.deepcopy(encoder)
    for p in target_encoder.parameters():
        p.requires_grad = False

    def groups(decay):
        return [p for m in (encoder, predictor) for n, p in m.named_parameters()
                if (('bias' not in n) and (len(p.shape) != 1)) == decay]
    optimizer = torch.optim.AdamW([{'params': groups(True), 'weight_decay': 0.04},
                                   {'params': groups(False), 'weight_decay': 0}], lr=1e-4)
    collate = MaskCollator(input_size=(32, 32), patch_size=4, enc_mask_scale=(0.85, 1.0),
                           pred_mask_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5), nenc=1, npred=4,
                           min_keep=4, allow_overlap=False)

    a_, up, down = torch.randn(2048, 192), 0.07 * torch.randn(192, 768), 0.07 * torch.randn(768, 192)

    def gemm():
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(5):
            y = a_
            for _ in range(8):
                y = (y @ up) @ down
        return {'wall': time.perf_counter() - t0, 'cpu': time.process_time() - c0,
                'flops': 5 * 8 * 2 * 2 * 2048 * 192 * 768}

    for line in sys.stdin:
        request = json.loads(line)
        if request.get('gemm'):
            print(json.dumps(gemm()), flush=True)
            continue
        seed = request['seed']
        g = torch.Generator().manual_seed(seed)
        batch = [(torch.randn(3, 32, 32, generator=g), 0) for _ in range(a.batch)]
        (imgs, _), masks_enc, masks_pred = collate(batch)

        c0, t0 = time.process_time(), time.perf_counter()
        with torch.no_grad():
            h = target_encoder(imgs)
            h = F.layer_norm(h, (h.size(-1),))
            h = repeat_interleave_batch(apply_masks(h, masks_pred), len(h), repeat=len(masks_enc))
        z = predictor(encoder(imgs, masks_enc), masks_enc, masks_pred)
        loss = F.smooth_l1_loss(z, h)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            for q, k in zip(encoder.parameters(), target_encoder.parameters()):
                k.data.mul_(0.996).add_((1. - 0.996) * q.detach().data)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0

        print(json.dumps({'wall': wall, 'cpu': cpu, 'ctx': masks_enc[0].shape[1], 'tgt': masks_pred[0].shape[1],
                          'targets': len(masks_pred), 'loss': float(loss)}), flush=True)


if __name__ == '__main__':
    main()
