# Stage 3: the paper's figures and tables, each a declared output with a report caption,
# and one named target per artifact (e.g. `snakemake fig4`).


rule render_figure:
    input:
        unpack(figure_inputs),
    output:
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
        provenance=f"{RESULTS}/figures/{{figure}}.provenance.json",
        png=report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/artifact.rst",
            category="Figures",
            labels={"artifact": "{figure}"},
        ),
    log:
        f"{RESULTS}/logs/render_figure/{{figure}}.log",
    conda:
        "../../envs/offprincipal.yaml"
    params:
        artifact=figure_params,
        caption=figure_caption,
    script:
        "../scripts/render-artifact.py"


rule render_table:
    input:
        unpack(table_inputs),
    output:
        csv=report(
            f"{RESULTS}/tables/{{table}}.csv",
            caption="../report/artifact.rst",
            category="Tables",
            labels={"artifact": "{table}"},
        ),
        md=f"{RESULTS}/tables/{{table}}.md",
        provenance=f"{RESULTS}/tables/{{table}}.provenance.json",
    log:
        f"{RESULTS}/logs/render_table/{{table}}.log",
    conda:
        "../../envs/offprincipal.yaml"
    params:
        artifact=table_params,
        caption=table_caption,
    script:
        "../scripts/render-artifact.py"


for _artifact in ARTIFACT_SPECS:

    rule:
        name:
            _artifact
        input:
            artifact_paths(_artifact),
        localrule: True
