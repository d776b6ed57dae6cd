# DiGraP on the LoRA adapters of BLIP-base, VQAv2 (anchor 0, mu 0.5: the authors' VQAv2 run).
_base_ = ['./_base_/blip-base-lora_vqav2.py', '../_base_/methods/digrap.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=0.0), accumulative_counts=2,
    digrap=dict(mu=0.5, anchor='zero', exclude=[]))
