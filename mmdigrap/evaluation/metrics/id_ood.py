"""ID / OOD accuracy over several named test sets in ONE evaluation.

:class:`IDOODAccuracy` (mmpretrain ``METRICS``): top-1 accuracy (%) per set, the ID accuracy,
the mean OOD accuracy (unweighted mean over all non-ID sets), the worst OOD set, and per-group
(per-corruption) means over severities. Logs a markdown table and writes ``results.json`` and
``results.md``. The set of each sample comes from its ``set_name`` metainfo, stamped by
:class:`~mmdigrap.datasets.IDOODConcatDataset`; a plain dataset without ``set_name`` works
too: every sample then counts as the ID set, which is what a per-epoch ``val_evaluator`` on
the ID split needs.

:func:`summarize_idood` and :func:`idood_markdown` are the same computation and table for
records collected elsewhere (``tools/wise_ft.py``, the benchmarks).
"""
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from mmpretrain.registry import METRICS

from ...utils.misc import markdown_table
from ...utils.set_names import parse_set_name

__all__ = ['IDOODAccuracy', 'summarize_idood', 'idood_markdown']


def summarize_idood(records: Sequence, id_set: Optional[str] = 'id',
                    set_infos: Optional[Sequence[Mapping]] = None) -> dict:
    """Per-set and summary top-1 accuracies from ``(set_name, pred, gt)`` records.

    Args:
        records: one ``(set_name, pred_label, gt_label)`` per sample.
        id_set: name of the ID set (``None``: no ID set).
        set_infos: optional ``[dict(name, group, severity[, size])]`` giving the order,
            the groups and the severities (as in ``IDOODConcatDataset.metainfo['idood_sets']``).
            Sets seen in ``records`` but not listed are appended in order of first
            appearance, grouped by the ``<group>_s<k>`` naming pattern.

    Returns:
        dict with ``id`` (float % or None), ``ood_mean`` (unweighted mean of the OOD sets'
        accuracies, % or None), ``ood_worst`` (%, or None), ``num_ood_sets``, ``sets``
        (list of ``dict(name, group, severity, num_images, correct, accuracy, is_id)``), and
        ``groups`` (``{group: dict(mean, by_severity={str(sev): acc}, sets=[names])}`` over
        the OOD sets), ``id_set``. Sets listed in ``set_infos`` with no record are left out.
    """
    infos: 'OrderedDict[str, dict]' = OrderedDict()
    for info in set_infos or ():
        infos[info['name']] = dict(group=info.get('group') or info['name'],
                                   severity=info.get('severity'))
    counts: Dict[str, List[int]] = {}
    order: List[str] = []
    for name, pred, gt in records:
        if name not in counts:
            counts[name] = [0, 0]
            order.append(name)
        counts[name][0] += 1
        counts[name][1] += int(int(pred) == int(gt))
    for name in order:
        if name not in infos:
            g, s = parse_set_name(name)
            infos[name] = dict(group=g, severity=s)
    sets = []
    for name, info in infos.items():
        if name not in counts:
            continue
        n, c = counts[name]
        sets.append(dict(name=name, group=info['group'], severity=info['severity'],
                         num_images=n, correct=c, accuracy=100.0 * c / n,
                         is_id=name == id_set))
    ood = [s for s in sets if not s['is_id']]
    ood_accs = [s['accuracy'] for s in ood]
    groups: 'OrderedDict[str, dict]' = OrderedDict()
    for s in ood:
        g = groups.setdefault(s['group'], dict(sets=[], by_severity={}, accs=[]))
        g['sets'].append(s['name'])
        g['accs'].append(s['accuracy'])
        if s['severity'] is not None:
            g['by_severity'][str(s['severity'])] = s['accuracy']
    for g in groups.values():
        g['mean'] = float(np.mean(g.pop('accs')))
    id_rows = [s for s in sets if s['is_id']]
    return dict(
        id_set=id_set,
        id=id_rows[0]['accuracy'] if id_rows else None,
        ood_mean=float(np.mean(ood_accs)) if ood_accs else None,
        ood_worst=float(min(ood_accs)) if ood_accs else None,
        num_ood_sets=len(ood),
        sets=sets,
        groups=dict(groups))


def _fmt(x: Optional[float]) -> str:
    return '' if x is None else f'{x:.2f}'


def idood_markdown(summary: dict, title: Optional[str] = None, detail: bool = True) -> str:
    """Markdown of a :func:`summarize_idood` result (via :func:`mmdigrap.utils.markdown_table`).

    The first table has one row for the ID set, one per OOD group (its accuracy at each
    severity present, and the mean over them), and the OOD mean; with ``detail`` a second
    table lists every set with its image count. Accuracies are top-1 % with two decimals.
    """
    sevs = sorted({int(k) for g in summary['groups'].values() for k in g['by_severity']})
    blank = [''] * len(sevs)
    by_name = {s['name']: s for s in summary['sets']}
    rows = [[f"ID: {s['name']}"] + blank + [_fmt(s['accuracy']), s['num_images']]
            for s in summary['sets'] if s['is_id']]
    for gname, g in summary['groups'].items():
        cells = [_fmt(g['by_severity'].get(str(k))) for k in sevs]
        n = sum(by_name[m]['num_images'] for m in g['sets'])
        rows.append([gname] + cells + [_fmt(g['mean']), n])
    if summary['num_ood_sets']:
        n = sum(s['num_images'] for s in summary['sets'] if not s['is_id'])
        rows.append([f"**OOD mean** ({summary['num_ood_sets']} sets)"] + blank +
                    [f"**{_fmt(summary['ood_mean'])}**", n])
    lines = [f'**{title}**', ''] if title else []
    lines += [markdown_table(['set'] + [f's{k}' for k in sevs] + ['mean', 'images'], rows), '',
              'Top-1 accuracy (%). OOD mean = unweighted mean over the OOD sets; '
              f"worst OOD set: {_fmt(summary['ood_worst']) or '-'}."]
    if detail:
        detail_rows = [[f"{s['name']} (ID)" if s['is_id'] else s['name'], s['group'],
                        '' if s['severity'] is None else s['severity'], s['num_images'],
                        s['correct'], _fmt(s['accuracy'])] for s in summary['sets']]
        lines += ['', markdown_table(['set', 'group', 'severity', 'images', 'correct',
                                      'top-1 (%)'], detail_rows,
                                     align=['l', 'l', 'r', 'r', 'r', 'r'])]
    return '\n'.join(lines) + '\n'


def _current_work_dir() -> Optional[str]:
    """The work dir of the running mmengine Runner, from the current logger's log file.

    mmengine writes ``<work_dir>/<timestamp>/<timestamp>.log``; returns ``<work_dir>`` for
    that layout, the log file's folder otherwise, and ``None`` when the logger has no file.
    """
    logger = MMLogger.get_current_instance()
    for h in logger.handlers:
        path = getattr(h, 'baseFilename', None)
        if path:
            log_dir = osp.dirname(path)
            if osp.basename(path) == osp.basename(log_dir) + '.log':
                return osp.dirname(log_dir)
            return log_dir
    return None


@METRICS.register_module()
class IDOODAccuracy(BaseMetric):
    """Top-1 accuracy per test set, ID accuracy and mean OOD accuracy, in one evaluation.

    Each sample's set is read from its ``set_name`` metainfo (stamped by
    :class:`~mmdigrap.datasets.IDOODConcatDataset`); samples without one belong to the ID
    set. Accuracies are in percent, like mmpretrain's ``Accuracy``. The prediction is
    ``pred_label`` if present, else the argmax of ``pred_score``.

    Returned keys (with the default prefix ``idood``):

    * ``idood/id``: ID accuracy (when the ID set is evaluated);
    * ``idood/ood_mean``: unweighted mean over all non-ID sets; ``idood/ood_worst``: the
      lowest OOD set (both only when OOD sets are evaluated);
    * ``idood/<set>`` for every set (e.g. ``idood/gaussian_noise_s3``);
    * ``idood/<group>_mean`` for every group of OOD sets whose members are not just the group
      itself, e.g. ``idood/gaussian_noise_mean`` = mean over the evaluated severities.

    Args:
        id_set (str, optional): name of the ID set; ``None`` takes ``dataset_meta['id_set']``
            (set by ``IDOODConcatDataset``), falling back to ``'id'``.
        out_dir (str, optional): folder for ``<file_prefix>.json`` and ``<file_prefix>.md``.
            ``None``: the running Runner's ``work_dir`` (found through the current mmengine
            logger's log file); if there is none, no files are written.
        save_files (bool): write the files at all (set False for a per-epoch val evaluator).
        file_prefix (str): file stem, ``'results'`` by default.
        tag (str, optional): free text stored in the files and the table title (e.g. the
            method name).
        collect_device, prefix: as in mmengine's ``BaseMetric``.
    """
    default_prefix: Optional[str] = 'idood'

    def __init__(self,
                 id_set: Optional[str] = None,
                 out_dir: Optional[str] = None,
                 save_files: bool = True,
                 file_prefix: str = 'results',
                 tag: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.id_set = id_set
        self.out_dir = out_dir
        self.save_files = save_files
        self.file_prefix = file_prefix
        self.tag = tag
        self.last_summary: Optional[dict] = None
        self.last_files: List[str] = []

    def _id_name(self) -> Optional[str]:
        if self.id_set is not None:
            return self.id_set
        meta = self.dataset_meta or {}
        return meta['id_set'] if 'id_set' in meta else 'id'

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Store ``(set_name or None, pred, gt)`` for every sample of the batch."""
        for ds in data_samples:
            if 'pred_label' in ds and ds['pred_label'] is not None:
                pred = int(np.asarray(_cpu(ds['pred_label'])).reshape(-1)[0])
            elif 'pred_score' in ds:
                pred = int(np.argmax(np.asarray(_cpu(ds['pred_score'])).reshape(-1)))
            else:
                raise KeyError('IDOODAccuracy needs pred_label or pred_score in the outputs')
            gt = int(np.asarray(_cpu(ds['gt_label'])).reshape(-1)[0])
            self.results.append((ds.get('set_name'), pred, gt))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        id_name = self._id_name()
        meta = self.dataset_meta or {}
        set_infos = meta.get('idood_sets')
        records = [(id_name if n is None else n, p, g) for n, p, g in results]
        summary = summarize_idood(records, id_name, set_infos)
        self.last_summary = summary
        logger = MMLogger.get_current_instance()
        for info in set_infos or ():
            got = next((s['num_images'] for s in summary['sets'] if s['name'] == info['name']),
                       0)
            if info.get('size') is not None and got != info['size']:
                logger.warning(f"IDOODAccuracy: set {info['name']!r} has {info['size']} "
                               f'images but {got} were evaluated')
        title = 'ID / OOD top-1 accuracy (%)' + (f' [{self.tag}]' if self.tag else '')
        logger.info('\n' + idood_markdown(summary, title=title, detail=False))
        if self.save_files:
            self._write(summary, title)

        metrics: Dict[str, float] = {}
        if summary['id'] is not None:
            metrics['id'] = summary['id']
        if summary['ood_mean'] is not None:
            metrics['ood_mean'] = summary['ood_mean']
            metrics['ood_worst'] = summary['ood_worst']
        for s in summary['sets']:
            metrics.setdefault(s['name'], s['accuracy'])
        for g, info in summary['groups'].items():
            if info['sets'] != [g]:
                metrics.setdefault(f'{g}_mean', info['mean'])
        return metrics

    def _write(self, summary: dict, title: str) -> None:
        out_dir = self.out_dir if self.out_dir is not None else _current_work_dir()
        self.last_files = []
        if out_dir is None:
            print_log('IDOODAccuracy: no out_dir and no running Runner log file; '
                      'results.json/md not written', logger='current')
            return
        os.makedirs(out_dir, exist_ok=True)
        payload = dict(metric='top-1 accuracy (%)', tag=self.tag, **summary)
        js = osp.join(out_dir, f'{self.file_prefix}.json')
        md = osp.join(out_dir, f'{self.file_prefix}.md')
        with open(js, 'w') as f:
            json.dump(payload, f, indent=2, allow_nan=False)
            f.write('\n')
        with open(md, 'w') as f:
            f.write(idood_markdown(summary, title=title, detail=True))
        self.last_files = [js, md]
        print_log(f'IDOODAccuracy: wrote {js} and {md}', logger='current')


def _cpu(x):
    return x.detach().cpu().numpy() if hasattr(x, 'detach') else x
