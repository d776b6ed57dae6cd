# LoRA on the fmnist task (configs/embedded/_base_/dinov2-s_fmnist-56px.py): the same
# ImageClassifier (DINOv2 ViT-S/14 at 56 px + the linear head), wrapped in mmdigrap's
# FullStateLoRAModel (mmpretrain's LoRAModel with complete checkpoints that load a plain
# model's: mmdigrap/models/lora.py). The recipe of configs/vqa/_base_/blip-base-lora_vqav2.py
# (the authors' PaliGemma runs): r=8, alpha=16, dropout 0.05 on the attention projections of
# every ViT block (`backbone.layers.<i>.attn.qkv` = q/k/v, `.attn.proj` = o: 12 x 2 layers,
# 12 x (8 x 384 + 1152 x 8 + 8 x 384 + 384 x 8) = 221,184 adapter weights; the frozen model
# has 22.06 M).
#
# Trainable: the adapters only. The backbone AND the linear-probed head stay frozen (what
# LoRAModel does; the paper's LoRA runs train the adapters only): the LP head is already fit
# to the start features, and with `anchor='zero'` (DiGraP) an anchor of 0 is meaningful for
# adapters (0 = the start model) but not for a head, whose start is the LP.
#
# Start: `load_from` = a plain LP checkpoint (the benchmark passes each seed's): every LP
# weight (backbone + head) loads into the wrapped model and the adapters keep their init
# (lora_up = 0), so training starts from exactly the LP model. Checkpoints hold every
# tensor, so tools/test.py / tools/wise_ft.py need nothing else.
_base_ = ['./dinov2-s_fmnist-56px.py']

model = dict(
    _delete_=True,
    type='FullStateLoRAModel',
    module={{_base_.model}},
    alpha=16,
    rank=8,
    drop_rate=0.05,
    targets=[dict(type=r'backbone\.layers\.\d+\.attn\.(qkv|proj)')])

# the dataset base's `quick` dict, with the backbone key under `module.`
quick = {
    '_delete_': True,
    'model.module.backbone.img_size': 56,
    'train_dataloader.dataset.pipeline.0.scale': 56,
    'val_dataloader.dataset.pipeline.0.scale': 56,
    'test_dataloader.dataset.pipeline.0.scale': 56,
    'train_dataloader.dataset.subset': 160,
    'val_dataloader.dataset.subset': 64,
    'test_dataloader.dataset.subset': 64,
    'test_dataloader.dataset.severities': [3],
}

# the adapters' optimizer (the leaf configs repeat these lines): AdamW lr 1e-3, the VQA LoRA
# recipe's adapter lr, not FT's full-model lr (1e-5 / 3e-5 would barely move lora_up from 0
# in 300 steps); no weight decay (the fmnist family's; with anchor 0 a decay would itself be a
# pull towards the start model); the family's clip_grad and schedule (20 warm-up steps, cosine):
#   optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0),
#                        clip_grad=dict(max_norm=5.0))
