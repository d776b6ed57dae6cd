# Vanilla fine-tuning (algorithm.md §13.1): plain AdamW, no pull towards the pre-trained weights.
# LoRA fine-tuning is this method on a LoRAModel (only the adapters are trainable).
# Knobs: --cfg-options optim_wrapper.optimizer.lr=1e-5 optim_wrapper.optimizer.weight_decay=0.1
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4))
custom_hooks = []
