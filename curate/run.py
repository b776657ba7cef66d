"""A curation run: the stages wired on Ray Data, with files between them.

The run folder's layout and lifecycle (run.yaml, stage folders, finalize, DONE) belong to
``curate.runfolder.RunFolder``. Ray runs locally by default (``ray.init`` on this machine) or
joins a cluster with ``address``. Nothing outside this module knows Ray is there: stages are
plain callables.
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import pyarrow as pa

from curate import dedup, demo, fetch, licenses, records, shards, stages, verdict
from curate.caption import Captioner, ClipSimilarity, CocaCaptioner
from curate.config import RunConfig, load_pipeline, resolve
from curate.ingest import Ingest, work_items
from curate.io import write_parquet_atomic
from curate.runfolder import RunFolder
from curate.score import embed, images, store, watermark
from curate.score.filter import EmbeddingHeads, ScoreFilter

log = logging.getLogger("cleanroom.run")


@contextmanager
def ray_session(config: RunConfig, address: str | None) -> Iterator[None]:
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=config.pipeline.ray.num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def run(pipeline_file: Path, out: Path, address: str | None = None) -> dict[str, Any]:
    """Run (or resume) a pipeline into ``out``; returns the run's stats."""
    folder = RunFolder.at(out)
    folder.root.mkdir(parents=True, exist_ok=True)
    pipeline = load_pipeline(pipeline_file)
    variables = {"out": str(folder.root), **(demo.prepare(pipeline.demo, folder.root) if pipeline.demo else {})}
    config = resolve(pipeline_file, variables)
    config.mode = "cluster" if address else "local"
    folder.claim(config)
    if folder.done:
        log.info("%s is a finished run: nothing to do", folder.root)
        return folder.stats()
    serving = demo.serving(pipeline.demo, folder.root) if pipeline.demo else nullcontext()
    with serving, ray_session(config, address):
        return Run(config, folder).execute()


class Run:
    def __init__(self, config: RunConfig, folder: RunFolder):
        self.config = config
        self.folder = folder
        self.policy = licenses.Policy.load(config.policy_file)

    def stage(self, name: str, produce: Callable[[Path], None]) -> Path:
        """Run ``produce`` into a scratch folder that becomes ``work/<name>`` only when it finished."""
        final = self.folder.stage_dir(name)
        if final.exists():
            log.info("stage %s: already done", name)
            return final
        scratch = self.folder.partial_dir(name)
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        log.info("stage %s", name)
        produce(scratch)
        os.replace(scratch, final)
        return final

    def execute(self) -> dict[str, Any]:
        self.stage("ingest", self.ingest)
        if not self.folder.stage_dir("filtered").exists():  # fetch results are only read by the filter stage
            self.fetch()
        self.stage("filtered", self.filter)
        if self.config.pipeline.scoring is not None:
            self.stage("scored", self.score)
        self.stage("dedup", self.dedup)
        self.stage("captioned", self.caption)
        self.stage("assign", self.assign)
        written = self.write_shards()
        shards.write_index(self.folder.shards, written)
        return self.folder.finalize(self.manifest())

    @property
    def before_dedup(self) -> str:
        """The stage dedup and captioning read: scored records when the run scores, else filtered ones."""
        return "scored" if self.config.pipeline.scoring is not None else "filtered"

    def ingest(self, into: Path) -> None:
        import ray

        policy = self.policy
        (ray.data.from_items(work_items(self.config.sources))
         .map_batches(Ingest(self.config.sources), batch_size=1, batch_format="pyarrow")
         .map_batches(lambda t: verdict.apply_policy(t, policy), batch_format="pyarrow")
         .write_parquet(str(into)))

    def fetch(self) -> None:
        con = duckdb.connect()
        for source in self.config.sources:
            candidates = con.sql(
                "SELECT key, url FROM read_parquet(?) WHERE status = ? AND source = ? ORDER BY key",
                params=[self.folder.stage_glob("ingest"), records.PENDING, source.source]).to_arrow_table()
            if candidates.num_rows:
                log.info("fetch %s: %d candidates", source.source, candidates.num_rows)
                fetch.download(candidates, self.folder.fetch_root / source.source, source.fetch)

    def fetch_dirs(self) -> list[Path]:
        return [d for d in sorted(self.folder.fetch_root.glob("*")) if d.is_dir()]

    def filter(self, into: Path) -> None:
        import ray

        results = [fetch.results(d) for d in self.fetch_dirs()]
        apply = fetch.ApplyFetch(pa.concat_tables(results) if results else fetch.empty_results())
        ds = ray.data.read_parquet(str(self.folder.stage_dir("ingest"))).map_batches(apply, batch_format="pyarrow")
        for record_filter in stages.configured(self.config.pipeline.filters):
            ds = ds.map_batches(record_filter, batch_format="pyarrow")
        ds.write_parquet(str(into))

    def score(self, into: Path) -> None:
        """CLIP embeddings, the heads and their thresholds, and perceptual hashes for dedup."""
        import ray

        settings = self.config.pipeline.scoring
        heads = EmbeddingHeads(settings)  # checks every weight file and shape before any image is read
        embeddings = self.folder.embeddings
        shutil.rmtree(embeddings, ignore_errors=True)  # an unfinished stage is redone whole
        actor = {**model_stage(), "batch_size": settings.batch_size}
        ds = (ray.data.read_parquet(str(self.folder.stage_dir("filtered")))
              .map_batches(images.AttachImages(self.folder.fetch_root), batch_size=settings.batch_size,
                           batch_format="pyarrow")
              .map_batches(embed.Embed, fn_constructor_kwargs={"spec": settings.clip,
                                                               "batch_size": settings.batch_size}, **actor))
        if settings.watermark:
            ds = ds.map_batches(watermark.Watermark, fn_constructor_kwargs={"config": settings.watermark}, **actor)
        (ds.map_batches(dedup.add_phash, batch_format="pyarrow")
         .map_batches(images.drop_images, batch_format="pyarrow")
         .map_batches(heads, batch_format="pyarrow")
         .map_batches(store.EmbeddingWriter(embeddings), batch_format="pyarrow")
         .map_batches(ScoreFilter(settings), batch_format="pyarrow")
         .write_parquet(str(into)))

    def dedup(self, into: Path) -> None:
        source = self.folder.stage_glob(self.before_dedup)
        found = duckdb.execute("SELECT DISTINCT license FROM read_parquet(?) WHERE license IS NOT NULL",
                               [source]).fetchall()
        ranks = {lic: self.policy.rank(lic) for (lic,) in found}
        priority = {s.source: s.priority for s in self.config.sources}
        settings = self.config.pipeline.dedup
        decisions = dedup.exact_decisions(source, ranks, priority) if settings.exact else dedup.empty_decisions()
        if settings.near.phash or settings.near.clip:
            near = dedup.near_decisions(source, self.folder.embeddings, ranks, priority, settings.near, decisions)
            decisions = pa.concat_tables([decisions, near])
        write_parquet_atomic(decisions, into / "decisions.parquet")

    def caption(self, into: Path) -> None:
        import pyarrow.parquet as pq
        import ray

        captions = self.config.pipeline.captions
        decisions = pq.read_table(self.folder.stage_dir("dedup") / "decisions.parquet")
        ds = (ray.data.read_parquet(str(self.folder.stage_dir(self.before_dedup)))
              .map_batches(dedup.ApplyDuplicates(decisions), batch_format="pyarrow"))
        uses_images = captions.captioner is not None or captions.similarity is not None
        if uses_images:
            ds = ds.map_batches(images.AttachImages(self.folder.fetch_root), batch_format="pyarrow")
        if captions.captioner is not None:
            ds = ds.map_batches(CocaCaptioner, fn_constructor_args=(captions,),
                                batch_size=captions.captioner.batch_size,
                                **model_stage())
        ds = ds.map_batches(Captioner(captions, {s.source: s.adapter for s in self.config.sources}),
                            batch_format="pyarrow")
        if captions.similarity is not None:
            ds = ds.map_batches(ClipSimilarity, fn_constructor_args=(captions.similarity,),
                                batch_size=captions.similarity.batch_size, **model_stage())
        if uses_images:
            ds = ds.map_batches(images.drop_images, batch_format="pyarrow")
        ds.write_parquet(str(into))

    def assign(self, into: Path) -> None:
        keys = duckdb.execute("SELECT key FROM read_parquet(?) WHERE status = ?",
                              [self.folder.stage_glob("captioned"), records.PENDING]).fetchall()
        table = shards.assign([k for (k,) in keys], self.config.pipeline.shards.samples_per_shard)
        write_parquet_atomic(table, into / "assign.parquet")

    def write_shards(self) -> list[str]:
        import ray

        assign = str(self.folder.stage_dir("assign") / "assign.parquet")
        names = [n for (n,) in duckdb.execute("SELECT DISTINCT shard FROM read_parquet(?) ORDER BY 1",
                                               [assign]).fetchall()]
        writer = ShardWriter(self.folder.shards, self.folder.stage_glob("captioned"), assign, self.folder.fetch_root)
        todo = [n for n in names if not shards.is_complete(self.folder.shards, n)]
        if todo:
            ray.data.from_items([{"shard": n} for n in todo]).map_batches(
                writer, batch_size=1, batch_format="pyarrow").materialize()
        return names

    def manifest(self) -> pa.Table:
        """OUT/records: every input record once, pending ones now kept in their shard."""
        table = duckdb.sql(f"""
            SELECT c.* REPLACE (
                CASE WHEN a.shard IS NOT NULL THEN '{records.KEPT}' ELSE c.status END AS status,
                a.shard AS shard)
            FROM read_parquet(?) c LEFT JOIN read_parquet(?) a USING (key)
            ORDER BY c.key
        """, params=[self.folder.stage_glob("captioned"),
                     str(self.folder.stage_dir("assign") / "assign.parquet")]).to_arrow_table()
        table = records.conform(table)
        left = [k for k, s in zip(table["key"].to_pylist(), table["status"].to_pylist()) if s == records.PENDING]
        if left:
            raise RuntimeError(f"records left without a terminal status: {left[:5]}")
        return table


def model_stage() -> dict[str, Any]:
    """Ray arguments for a stage that holds a model: one actor, loaded once.

    Half a CPU each: on a 2-core machine two model actors at 1 CPU would starve the read
    tasks and Ray Data stalls. Ray then runs torch with one thread in the actor.
    """
    import ray

    return {"compute": ray.data.ActorPoolStrategy(size=1), "num_cpus": 0.5, "batch_format": "pyarrow"}


class ShardWriter:
    """Ray stage: a batch of one shard name -> that shard written (skipped if already complete)."""

    def __init__(self, shards_dir: Path, captioned: str, assign: str, fetch_root: Path):
        self.shards_dir, self.captioned, self.assign, self.fetch_root = shards_dir, captioned, assign, fetch_root

    def __call__(self, batch: pa.Table) -> pa.Table:
        name = batch["shard"][0].as_py()
        rows = duckdb.sql("SELECT c.* FROM read_parquet(?) c JOIN read_parquet(?) a USING (key) WHERE a.shard = ?",
                          params=[self.captioned, self.assign, name]).to_arrow_table().to_pylist()
        images: dict[str, bytes] = {}
        for source in {r["source"] for r in rows}:
            keys = [r["key"] for r in rows if r["source"] == source]
            images.update(fetch.read_images(self.fetch_root / source, keys))
        shards.write_shard(self.shards_dir, name, rows, images)
        return pa.table({"shard": [name], "samples": [len(rows)]})
