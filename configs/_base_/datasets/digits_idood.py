# The digits task: ID = scikit-learn's 1797 UCI handwritten digits (8x8, 0-16 grey levels) put in
# the MNIST format (resized to 20x20, centred in 28x28) with a FIXED stratified split
# (mmdigrap.datasets.digits: train 1000 / val 300 / test 497, seed 20251201, whatever the run's
# seed); OOD = OpenCV's 5000 MNIST digits (Debian opencv-doc, examples/data/digits.png; 20x20
# centred in 28x28): a natural writer/scanner shift back to the pre-training domain, plus
# corrupted copies of them (imagecorruptions library; rotation hand-written), cached once under
# data/opencv_digits_c/. Every OOD set holds the same class-balanced 1000 of the 5000 images
# (1 image = 0.1 point), chosen by `ood_subset_seed`.
# OOD sets: the natural shift (`opencv`) plus, for each ImageNet-C family (noise: gaussian,
# shot, impulse; blur: defocus, glass, motion, zoom; digital: contrast, elastic, pixelate, jpeg)
# and for rotation, the (corruption, severity) at which the PRE-TRAINED model is closest to 70%
# top-1 (measured on these 1000 images): impulse_noise 5 (77.2%), motion_blur 3 (72.6%),
# elastic_transform 4 (72.3%), rotate 3 (30 degrees, 71.3%): far from chance (10%) and from
# ceiling. Not used: gaussian_blur (an ImageNet-C extra, not a family member) and the blurs in
# general at low severity: UCI digits are blurry 8x8 scans, so blurred OpenCV digits move
# TOWARDS the ID domain and fine-tuning gains on them (a first draft with gaussian blur and
# contrast had FT above zero-shot on mean OOD).
# Validation = the ID val split (the benchmark selects every knob on it, never on OOD data);
# the final test = ID test + every OOD set, in one run (IDOODConcatDataset + IDOODAccuracy).
ood_subset = 1000
ood_subset_seed = 0
cache_dir = 'data/opencv_digits_c'

train_pipeline = [dict(type='PackInputs')]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    dataset=dict(type='UCIDigits', split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
# batch 16 like training: TPGM trains its projection radii on batches of this loader, one
# batch per optimizer step (the val loop itself costs 19 tiny forward passes)
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    dataset=dict(type='UCIDigits', split='val', pipeline=test_pipeline, test_mode=True),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='IDOODAccuracy', save_files=False)


def _ood(corruption=None, severity=None):
    return dict(type='OpenCVDigits', corruption=corruption, severity=severity,
                subset=ood_subset, seed=ood_subset_seed, cache_dir=cache_dir,
                pipeline=test_pipeline, test_mode=True)


test_dataloader = dict(
    batch_size=500,
    num_workers=0,
    dataset=dict(
        type='IDOODConcatDataset',
        id_set='id',
        datasets=dict(
            id=dict(type='UCIDigits', split='test', pipeline=test_pipeline, test_mode=True),
            opencv=_ood(),
            impulse_noise_s5=_ood('impulse_noise', 5),
            motion_blur_s3=_ood('motion_blur', 3),
            elastic_transform_s4=_ood('elastic_transform', 4),
            rotate_s3=_ood('rotate', 3),
        )),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_evaluator = dict(type='IDOODAccuracy')
