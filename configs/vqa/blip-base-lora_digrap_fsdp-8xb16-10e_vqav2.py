# DiGraP on the LoRA adapters of BLIP-base, VQAv2, with the model sharded over the ranks
# (PyTorch FSDP2 `fully_shard`): the DDP config plus mmengine's FlexibleRunner and this
# project's FSDP2Strategy. The frozen BLIP weights and the LoRA adapters are both sharded;
# anchor='zero' stores no theta0, and omega is the same on every rank.
#   bash tools/dist_train.sh configs/vqa/blip-base-lora_digrap_fsdp-8xb16-10e_vqav2.py 8
_base_ = ['./blip-base-lora_digrap_8xb16-10e_vqav2.py']
runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDP2Strategy',
    # ViT blocks of the vision tower and the BERT layers of the text/multimodal encoders
    wrap_modules=['TransformerEncoderLayer', 'BertLayer'],
    fsdp_cfg=dict(reshard_after_forward=True),
    state_dict_type='sharded')
