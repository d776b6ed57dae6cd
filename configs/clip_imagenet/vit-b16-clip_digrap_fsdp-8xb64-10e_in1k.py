# DiGraP fine-tuning of CLIP ViT-B/16 on ImageNet with the parameters sharded over the ranks
# (PyTorch FSDP2 `fully_shard`, DTensor parameters): the DDP config plus mmengine's
# FlexibleRunner and this project's FSDP2Strategy. Each rank keeps only its shard of the
# weights, the AdamW moments, the anchors theta0 and DiGraP's projection buffers; omega is
# the same on every rank (the per-tensor sums are all-reduced, mmdigrap.core.distributed).
#   bash tools/dist_train.sh configs/clip_imagenet/vit-b16-clip_digrap_fsdp-8xb64-10e_in1k.py 8
# Checkpoints are torch.distributed.checkpoint directories (iter_N.pth/); --resume works;
# mmdigrap.engine.consolidate_sharded_checkpoint(dir, out.pth) gives a full checkpoint for a
# single-process run (or set strategy.state_dict_type='full').
_base_ = ['./vit-b16-clip_digrap_8xb64-10e_in1k.py']
runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDP2Strategy',
    wrap_modules=['TransformerEncoderLayer'],  # each ViT block is one FSDP2 unit
    fsdp_cfg=dict(reshard_after_forward=True),
    state_dict_type='sharded')
