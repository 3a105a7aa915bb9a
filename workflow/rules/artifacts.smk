# Stage 3: the paper's figures and tables, each a declared output with a report caption,
# and one named target per artifact (e.g. `snakemake fig4`).


rule render_figure:
    input:
        unpack(figure_inputs),
    output:
        pdf=LAYOUT.artifact_file("{figure}", "figure", "pdf"),
        provenance=report(
            LAYOUT.sidecar("{figure}", "figure"),
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"artifact": "{figure}"},
        ),
        png=report(
            LAYOUT.artifact_file("{figure}", "figure", "png"),
            caption="../report/artifact.rst",
            category="Figures",
            labels={"artifact": "{figure}"},
        ),
    log:
        LAYOUT.log("render_figure", "{figure}"),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        name="{figure}",
        artifact=figure_params,
        caption=figure_caption,
    script:
        "../scripts/render-artifact.py"


rule render_table:
    input:
        unpack(table_inputs),
    output:
        csv=report(
            LAYOUT.artifact_file("{table}", "table", "csv"),
            caption="../report/artifact.rst",
            category="Tables",
            labels={"artifact": "{table}"},
        ),
        md=LAYOUT.artifact_file("{table}", "table", "md"),
        provenance=report(
            LAYOUT.sidecar("{table}", "table"),
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"artifact": "{table}"},
        ),
    log:
        LAYOUT.log("render_table", "{table}"),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        name="{table}",
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
            LAYOUT.artifact_file("claims", "table", "csv"),
            caption="../report/artifact.rst",
            category="Claims",
            labels={"artifact": "claims"},
        ),
        md=LAYOUT.artifact_file("claims", "table", "md"),
        provenance=report(
            LAYOUT.sidecar("claims", "table"),
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"artifact": "claims"},
        ),
    log:
        LAYOUT.log("render_table", "claims"),
    conda:
        "../../envs/offprincipal.yaml"
    params:
        name="claims",
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
