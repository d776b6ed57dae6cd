"""BLIP-base + LoRA fine-tuned on VQAv2; ID = VQAv2 val, near OOD = VQA-CP v2 test (answer
shift) and VQA-Rephrasings (question shift), far OOD = VizWiz val, TextVQA val, OK-VQA val,
all evaluated by one `tools/test.py` run (PerSetMetric over VQAAcc: per-set accuracy,
near/far-OOD means, OOD mean).

Why BLIP-base and not LLaVA: the DiGraP paper's VQA model is PaliGemma-3B + LoRA, which
mmpretrain does not have. Of mmpretrain's VQA models, BLIP-base (ViT-B/16 + BERT-base
encoder/decoder, ~360 M parameters) is the one whose whole fine-tuning step runs on a CPU
(smoke-tested in tests/configs) and on one GPU; LLaVA-7B is 20x larger and mmpretrain only
ships its inference path. The LoRA recipe follows the authors' PaliGemma runs
(docs/settings.md; docs/algorithm.md section 8): r=8, alpha=16, dropout 0.05 on the attention
q/k/v/o projections of every tower; AdamW lr 1e-3 for the adapters; 10 epochs; DiGraP / L2-SP /
SPD / FTP anchor the adapters at 0 (`anchor='zero'`).

Weights (`model.module.init_cfg.checkpoint`, loaded when LoRAModel is built, before the
adapters are inserted): a BLIP-base checkpoint with mmpretrain's BlipVQA keys
(`vision_backbone.*`, `multimodal_backbone.*`, `vqa_head.decoder.*`). mmpretrain's zoo has
`blip-base_3rdparty-capflit_vqa_20230505-81488941.pth`, which is already VQAv2 fine-tuned
(then the runs measure robust *continued* fine-tuning); see docs/settings.md.
The tokenizer is `bert-base-uncased` from the Hugging Face cache (HF_HUB_OFFLINE=1) or a
local folder: --cfg-options model.module.tokenizer.name_or_path=/path/to/bert-base-uncased
Needs `transformers` (mmpretrain registers BLIP only when it is installed).
"""
custom_imports = dict(imports=['mmdigrap'], allow_failed_imports=False)

_base_ = ['mmpretrain::_base_/default_runtime.py']

_med_config = dict(
    architectures=['BertModel'],
    attention_probs_dropout_prob=0.1,
    hidden_act='gelu',
    hidden_dropout_prob=0.1,
    hidden_size=768,
    initializer_range=0.02,
    intermediate_size=3072,
    layer_norm_eps=1e-12,
    max_position_embeddings=512,
    model_type='bert',
    num_attention_heads=12,
    num_hidden_layers=12,
    pad_token_id=0,
    add_type_embeddings=False,
    vocab_size=30524,
    encoder_width=768,
    add_cross_attention=True)

_blip_preprocessor = dict(
    type='MultiModalDataPreprocessor',
    mean=[122.770938, 116.7460125, 104.09373615],
    std=[68.5005327, 66.6321579, 70.32316305],
    to_rgb=True)
model = dict(
    type='FullStateLoRAModel',  # LoRAModel + complete checkpoints (mmdigrap.models.lora)
    module=dict(
        type='BlipVQA',
        tokenizer=dict(type='BlipTokenizer', name_or_path='bert-base-uncased'),
        data_preprocessor=_blip_preprocessor,
        vision_backbone=dict(
            type='VisionTransformer', arch='b', img_size=480, patch_size=16, out_type='raw'),
        multimodal_backbone=dict(type='XBertEncoder', med_config=_med_config),
        head=dict(
            type='VQAGenerationHead',
            decoder=dict(type='XBertLMHeadDecoder', med_config=_med_config),
            # 'generate' needs no answer list, so it also scores the far-OOD sets fairly;
            # for the VQAv2 leaderboard protocol use inference_method='rank' with
            # answer_list_path='data/coco/annotations/answer_list.json'
            inference_method='generate',
            num_beams=5),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/blip-base_3rdparty-capflit_vqa_20230505-81488941.pth')),
    alpha=16,
    rank=8,
    drop_rate=0.05,
    targets=[
        dict(type=r'vision_backbone\.layers\.\d+\.attn\.(qkv|proj)'),  # ViT q/k/v + o
        dict(type=r'.*attention\.self\.(query|key|value)'),  # BERT self/cross q, k, v
        dict(type=r'.*attention\.output\.dense'),  # BERT self/cross o
    ])

# ---------------------------------------------------------------- data
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=480, interpolation='bicubic', backend='pillow'),
    dict(type='CleanCaption', keys=['question']),
    dict(type='PackInputs', algorithm_keys=['question', 'gt_answer', 'gt_answer_weight'],
         meta_keys=['question_id', 'image_id']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(480, 480), interpolation='bicubic', backend='pillow'),
    dict(type='CleanCaption', keys=['question']),
    dict(type='PackInputs', algorithm_keys=['question', 'gt_answer', 'gt_answer_weight'],
         meta_keys=['question_id', 'image_id']),
]
train_dataloader = dict(
    batch_size=16,  # x 8 GPUs x accumulative_counts 2 = 256, as the authors' runs
    num_workers=8,
    dataset=dict(
        type='COCOVQA',
        data_root='data/coco',
        data_prefix='train2014',
        question_file='annotations/v2_OpenEnded_mscoco_train2014_questions.json',
        ann_file='annotations/v2_mscoco_train2014_annotations.json',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
    drop_last=True)
_vqav2_val = dict(
    type='COCOVQA',
    data_root='data/coco',
    data_prefix='val2014',
    question_file='annotations/v2_OpenEnded_mscoco_val2014_questions.json',
    ann_file='annotations/v2_mscoco_val2014_annotations.json',
    pipeline=test_pipeline)
val_dataloader = dict(
    batch_size=32,
    num_workers=8,
    dataset=_vqav2_val,
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='VQAAcc')
test_dataloader = dict(
    batch_size=32,
    num_workers=8,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='IDOODConcatDataset',
        id_set='vqav2',
        datasets=dict(
            vqav2=_vqav2_val,
            # VQA-CP v2 test, wrapped in VQAv2's {"questions": [...]} / {"annotations": [...]}
            # format; images: COCO train2014 + val2014 in one folder (docs/datasets.md)
            vqacp_v2=dict(
                type='COCOVQA',
                data_root='data/vqacp_v2',
                data_prefix='images',
                question_file='vqacp_v2_test_questions_vqa-format.json',
                ann_file='vqacp_v2_test_annotations_vqa-format.json',
                pipeline=test_pipeline),
            # VQA-Rephrasings (already in VQAv2 format), COCO val2014 images
            vqa_rephrasings=dict(
                type='COCOVQA',
                data_root='data/vqa_rephrasings',
                data_prefix='../coco/val2014',
                question_file='v2_OpenEnded_mscoco_valrep2014_humans_og_questions.json',
                ann_file='v2_mscoco_valrep2014_humans_og_annotations.json',
                pipeline=test_pipeline),
            vizwiz=dict(
                type='VizWiz',
                data_root='data/vizwiz/Images',
                data_prefix='val',
                ann_file='../Annotations/val.json',
                pipeline=test_pipeline),
            textvqa=dict(
                type='TextVQA',
                data_root='data/textvqa',
                data_prefix='train_images',
                ann_file='annotations/TextVQA_0.5.1_val.json',
                pipeline=test_pipeline),
            okvqa=dict(
                type='COCOVQA',
                data_root='data/coco',
                data_prefix='val2014',
                question_file='annotations/okvqa_OpenEnded_mscoco_val2014_questions.json',
                ann_file='annotations/okvqa_mscoco_val2014_annotations.json',
                pipeline=test_pipeline))))
test_evaluator = dict(
    type='PerSetMetric',
    metric=dict(type='VQAAcc'),
    id_set='vqav2',
    groups=dict(near_ood=['vqacp_v2', 'vqa_rephrasings'],
                far_ood=['vizwiz', 'textvqa', 'okvqa']))

# ---------------------------------------------------------------- schedule (no optim_wrapper)
# authors' runs: linear warm-up over 1000 steps from 0.1 x lr, then cosine to 0.1 x lr
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=10, eta_min=1e-4,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=1)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2),
    exact_resume=dict(type='ExactResumeHook'))  # random states + open accumulation window
randomness = dict(seed=42)
