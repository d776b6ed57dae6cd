# Ablation: DiGraP with a fixed projection strength (omega=1, not trained) on DomainNet-real.
_base_ = ['./_base_/resnet50_domainnet-real.py', '../_base_/methods/digrap_fixed.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.0), digrap=dict(omega=1.0, exclude=[r'^head\.']))
