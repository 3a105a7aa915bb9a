"""Figure renderers, one module per family; each function takes a ``Context`` and returns a
matplotlib figure (``offprincipal.render`` saves it as PDF and PNG)."""

from offprincipal.figures import crossrun, intervention, overlap, restoration, rotation, rowcol, spectrum, training

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
    "fig3": rowcol.fig3,
    "fig14": rowcol.fig14,
    "fig6": intervention.fig6,
    "fig9": training.fig9,
    "fig15": training.fig15,
    "fig10": training.fig10,
    "fig11": training.fig11,
    "sec2_3": training.sec2_3,
    "restore_topk": restoration.restore_topk,
    "restore_layers": restoration.restore_layers,
    "rotation_profile": restoration.rotation_profile,
    "sft_then_rl": restoration.sft_then_rl,
}
