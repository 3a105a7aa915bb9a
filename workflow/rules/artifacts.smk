# Stage 3: the paper's figures and tables, each a declared output with a report caption,
# and one named target per artifact (e.g. `snakemake fig4`).


rule render_figure:
    input:
        unpack(figure_inputs),
    output:
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
        provenance=report(
            f"{RESULTS}/figures/{{figure}}.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"artifact": "{figure}"},
        ),
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
        provenance=report(
            f"{RESULTS}/tables/{{table}}.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"artifact": "{table}"},
        ),
    log:
        f"{RESULTS}/logs/render_table/{{table}}.log",
    conda:
        "../../envs/offprincipal.yaml"
    params:
        artifact=table_params,
        caption=table_caption,
    script:
        "../scripts/render-artifact.py"


# The claims table reads the inputs of every claimed artifact; its own report category, so
# the report opens on it.
rule render_claims:
    input:
        unpack(claims_inputs_of),
    output:
        csv=report(
            f"{RESULTS}/tables/claims.csv",
            caption="../report/artifact.rst",
            category="Claims",
            labels={"artifact": "claims"},
        ),
        md=f"{RESULTS}/tables/claims.md",
        provenance=report(
            f"{RESULTS}/tables/claims.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"artifact": "claims"},
        ),
    log:
        f"{RESULTS}/logs/render_table/claims.log",
    conda:
        "../../envs/offprincipal.yaml"
    params:
        artifact=claims_params,
        caption=claims_caption,
    script:
        "../scripts/render-artifact.py"


for _artifact in RENDERED:

    rule:
        name:
            _artifact
        input:
            artifact_paths(_artifact),
        localrule: True
