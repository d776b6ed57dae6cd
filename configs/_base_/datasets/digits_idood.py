# The digits task: ID = scikit-learn's 1797 UCI handwritten digits (8x8, 0-16 grey levels) put in
# the MNIST format (resized to 20x20, centred in 28x28) with a FIXED stratified split
# (mmdigrap.datasets.digits: train 1000 / val 300 / test 497, seed 20251201, whatever the run's
# seed); OOD = OpenCV's 5000 MNIST digits (Debian opencv-doc, examples/data/digits.png; 20x20
# centred in 28x28): a natural writer/scanner shift back to the pre-training domain, plus
# corrupted copies of them (imagecorruptions library; rotation hand-written), cached once under
# data/opencv_digits_c/. Every OOD set holds the same class-balanced 1000 of the 5000 images
# (1 image = 0.1 point), chosen by `ood_subset_seed`.
# OOD sets: the natural shift (`opencv`) and one corruption per ImageNet-C family (noise, blur,
# digital) plus rotation, each at the severity where the pre-trained model scores 60-75%
# (measured: neither at chance nor at ceiling): gaussian_noise 5, motion_blur 2, contrast 2,
# rotate 3 (30 degrees). (defocus/gaussian blur are left out: UCI digits are blurry 8x8 scans,
# so blurred OpenCV digits are close to the ID domain, not a shift away from it.)
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
val_dataloader = dict(
    batch_size=300,
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
            gaussian_noise_s5=_ood('gaussian_noise', 5),
            motion_blur_s2=_ood('motion_blur', 2),
            contrast_s2=_ood('contrast', 2),
            rotate_s3=_ood('rotate', 3),
        )),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_evaluator = dict(type='IDOODAccuracy')
