"""Figure renderers, one module per family; each function takes a ``Context`` and returns a
matplotlib figure (``offprincipal.render`` saves it as PDF and PNG)."""

from offprincipal.figures import crossrun, overlap, rotation, spectrum

FIGURES = {
    "fig1c": rotation.fig1c,
    "fig8": rotation.fig8,
    "fig18": rotation.fig18,
    "fig4": spectrum.fig4,
    "fig16": spectrum.fig16,
    "fig17": spectrum.fig17,
    "fig5": overlap.fig5,
    "fig13": overlap.fig13,
    "fig7": overlap.fig7,
    "fig12": crossrun.fig12,
    "fig2": crossrun.fig2,
}
