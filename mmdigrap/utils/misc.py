"""One markdown-table helper and one model-unwrap helper for the whole project."""
from typing import Any, Iterable, Optional, Sequence

__all__ = ['markdown_table', 'unwrap_model']


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: Optional[Sequence[str]] = None) -> str:
    """Render a GitHub-flavoured markdown table with ``prettytable`` (as mmseg logs its tables).

    Args:
        header: column titles, length C.
        rows: rows of length C; cells are converted with ``str`` (format numbers beforehand).
        align: per-column ``'l'``, ``'r'`` or ``'c'`` (default: first column left, others right).

    Returns:
        The table as one string without a trailing newline.

    Raises:
        ValueError: a row or ``align`` does not have C entries.
    """
    from prettytable import PrettyTable, TableStyle

    header = [str(h) for h in header]
    table = PrettyTable(header)
    table.set_style(TableStyle.MARKDOWN)
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f'markdown_table: row {row!r} has {len(row)} cells, the header has '
                             f'{len(header)}')
        table.add_row([str(c) for c in row])
    align = align or (['l'] + ['r'] * (len(header) - 1))
    if len(align) != len(header):
        raise ValueError(f'markdown_table: align has {len(align)} entries for {len(header)} '
                         'columns')
    for h, a in zip(header, align):
        table.align[h] = a
    return table.get_string()


def unwrap_model(model: Any) -> Any:
    """The bare model inside an mmengine/torch wrapper (DDP, FSDP, ...), else ``model``.

    Parameter names taken from the result never carry the wrapper's ``module.`` prefix.
    """
    from mmengine.model import is_model_wrapper

    return model.module if is_model_wrapper(model) else model
