"""The LLM half of LLM4CDSR, as offline stages (see METHOD.md, "LLM item embeddings" and
"Hierarchical LLM profiling").

Entry points (import from `llm4cdsr.llm.stages`; this package imports nothing heavy itself):
    run_embed(cfg, force=False) -> meta          <workspace>/embeddings/
    run_profile(cfg, force=False) -> meta        <workspace>/<profile.output>/ (runs embed first if stale)
    embed_is_current(cfg), profile_is_current(cfg)
    dry_run_profile(cfg) -> dict                 chat calls and tokens a profile run would spend
    make_embedder(cfg).embed(texts)              the configured embedder behind the workspace cache
    item_texts(items_df, cfg)                    the configured item text of any items table
    llm4cdsr.llm.pca.project(vectors, mean, components)   apply a saved PCA (pca.safetensors)

Modules: texts (templates), cache (SQLite cache of every call), http (OpenAI-compatible client),
embedders, chat (backends), pca, profiling (clusters, prompts, reply checks, template profiles).
"""
