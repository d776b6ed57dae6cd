# DiGraP fine-tuning of CLIP ViT-B/16 on ImageNet (AdamW without weight decay, mu=0.5).
# The zero-shot head is pre-trained (text embeddings), so every tensor is anchored:
# exclude=[] (with a randomly initialised head use exclude=[r'^head\.fc\.']).
_base_ = ['./_base_/clip-vit-b16_in1k.py', '../_base_/methods/digrap.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0), clip_grad=dict(max_norm=1.0),
    digrap=dict(mu=0.5, exclude=[]))
