# LoRA fine-tuning of BLIP-base on VQAv2 (AdamW lr 1e-3, wd 1e-4: the authors' baseline).
_base_ = ['./_base_/blip-base-lora_vqav2.py', '../_base_/methods/ft.py']
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=1e-4), accumulative_counts=2)
