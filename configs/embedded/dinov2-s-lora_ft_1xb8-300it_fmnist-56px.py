# LoRA fine-tuning (plain AdamW on the adapters; r=8, alpha=16 on every block's attention
# qkv + proj; backbone and head frozen) from the linear-probe checkpoint.
# Knob: --cfg-options optim_wrapper.optimizer.lr=3e-4
_base_ = ['./_base_/dinov2-s-lora_fmnist-56px.py', '../_base_/methods/ft.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=0.0),
    clip_grad=dict(max_norm=5.0))
test_evaluator = dict(type='IDOODAccuracy', tag='LoRA FT (r=8)')
