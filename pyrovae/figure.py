"""Figures without pyplot: ``matplotlib.figure.Figure`` objects saved straight to PNG.

Nothing here selects a matplotlib backend or touches pyplot's state, so importing pyrovae leaves
the user's plotting setup (a notebook's inline backend, say) as it was.
"""

__all__ = ["subplots"]


def subplots(*args, figsize=None, **kwargs):
    """``(figure, axes)`` as ``pyplot.subplots`` returns them, on a figure that no pyplot window
    manager knows of; ``figure.savefig(path)`` writes it, and it needs no closing."""
    from matplotlib.figure import Figure  # matplotlib is imported when a figure is drawn

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)
