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
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from curate import dedup, demo, fetch, licenses, progress, records, shards, stages, verdict
from curate.caption import Captioner, ClipSimilarity
from curate.captioners.config import SimilarityFilter, captioner_class
from curate.config import ActorResources, RunConfig, load_pipeline, resolve
from curate.ingest import Ingest, work_items
from curate.progress import Progress
from curate.rights import steps as rights
from curate.io import atomic_path, write_parquet_atomic
from curate.runfolder import RunFolder
from curate.score import images, resolution, store
from curate.score.filter import EmbeddingHeads, ScoreThresholds
from curate.score.together import ScoreImages

log = logging.getLogger("cleanroom.run")
SHARD_ROWS = "rows"  # work/shards/rows/shard=NAME/*.parquet: the rows each shard is written from


@contextmanager
def ray_session(config: RunConfig, address: str | None) -> Iterator[None]:
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address)
    else:
        # "local": a new Ray on this machine even when a `ray start` head runs here (ray.init would join it).
        ray.init(address="local", num_cpus=config.pipeline.ray.num_cpus, include_dashboard=False,
                 log_to_driver=False)
    # Ray Data's bars on a terminal; elsewhere (a log file, CI) curate.progress writes plain lines.
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = sys.stderr.isatty()
    # Ray 2.60's new parquet reader lists files in a task of one whole CPU, which the read's
    # num_cpus does not reach: on nodes whose half-CPU actors leave half a CPU each (task_args),
    # it never runs. The first reader runs every read task with the CPUs asked.
    context.use_datasource_v2 = False
    try:
        yield
    finally:
        ray.shutdown()


def run(pipeline_file: Path, out: Path, address: str | None = None) -> dict[str, Any]:
    """Run (or resume) a pipeline into ``out``; returns the run's stats.

    ``address`` joins a Ray cluster; without it a run inside a Ray job (``ray job submit``) joins the
    job's cluster through the ``RAY_ADDRESS`` Ray sets, and any other run starts Ray on this machine.
    """
    address = address or os.environ.get("RAY_ADDRESS")
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
        self.times = progress.StepTimes(folder.root)
        self.timer: progress.Timer | None = None  # the step being timed, which Ray's CPU time is added to

    def stage(self, name: str, produce: Callable[[Path], None]) -> Path:
        """Run ``produce`` into a scratch folder that becomes ``work/<name>`` only when it finished."""
        final = self.folder.stage_dir(name)
        if final.exists():
            log.info("stage %s: already done", name)
            self.times.resumed(name)
            return final
        scratch = self.folder.partial_dir(name)
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        log.info("stage %s", name)
        with Progress(f"stage {name}", scratch, self.records_in(name)), self.times.timed(name) as self.timer:
            produce(scratch)
        os.replace(scratch, final)
        return final

    def records_in(self, step: str) -> int | None:
        """How many records ``step`` writes, when it passes every ingested record on (decided or not)."""
        ingested = self.folder.stage_dir("ingest")
        if step not in (stages.FILTER_STEP, "score", "caption") or not ingested.exists():
            return None
        return progress.rows_written(ingested)

    def execute(self) -> dict[str, Any]:
        self.stage("ingest", self.ingest)
        if not self.folder.stage_dir(stages.FILTER_STEP).exists():  # fetch results are only read by the filters
            with self.times.timed("fetch"):
                self.fetch()
        else:
            self.times.resumed("fetch")
        self.stage(stages.FILTER_STEP, self.filter)
        if self.config.pipeline.scoring is not None:
            self.stage("score", self.score)
        self.stage("dedup", self.dedup)
        self.stage("caption", self.caption)
        self.stage("shards", self.assign)
        written = self.write_shards()
        shards.write_index(self.folder.shards, written)
        self.folder.records.mkdir(exist_ok=True)
        self.write_manifest()
        return self.folder.finalize()

    @property
    def before_dedup(self) -> str:
        """The step dedup and captioning read: scored records when the run scores, else filtered ones."""
        return "score" if self.config.pipeline.scoring is not None else stages.FILTER_STEP

    def ingest(self, into: Path) -> None:
        import ray

        policy = self.policy
        self.write(ray.data.from_items(work_items(self.config.sources))
                   .map_batches(Ingest(self.config.sources), batch_size=1, batch_format="pyarrow")
                   .map_batches(lambda t: verdict.apply_policy(t, policy), batch_format="pyarrow"), into)

    def write(self, ds: Any, into: Path, tasks: dict[str, float] | None = None) -> None:
        """Write the Ray dataset ``ds`` into ``into``; the CPU time its tasks took counts in the current step.

        ``tasks``: the resources each write task asks for (``task_args``), as the dataset's other tasks.
        """
        ds.write_parquet(str(into), ray_remote_args=tasks or {})
        self.timer.add_cpu(ray_cpu_seconds(ds))

    def fetch(self) -> None:
        con = duckdb.connect()
        checks = self.record_filters()
        for source in self.config.sources:
            candidates = con.sql(
                "SELECT key, url, page_url, meta FROM read_parquet(?) WHERE status = ? AND source = ? ORDER BY key",
                params=[self.folder.stage_glob("ingest"), records.PENDING, source.source]).to_arrow_table()
            if candidates.num_rows:
                # The size a source's metadata states is judged first: what it rejects is never requested,
                # nor its host asked. Then hosts' robots.txt and tdmrep.json, so what they disallow is not either.
                candidates, too_small = resolution.before_fetch(candidates, checks)
                candidates, decided = rights.before_fetch(candidates, checks, source.fetch.timeout,
                                                          source.fetch.user_agent_token)
                log.info("fetch %s: %d candidates", source.source, candidates.num_rows)
                fetch.download(candidates, self.folder.fetch_root / source.source, source.fetch,
                               pa.concat_tables([too_small, decided]))

    def fetch_dirs(self) -> list[Path]:
        return [d for d in sorted(self.folder.fetch_root.glob("*")) if d.is_dir()]

    def filter(self, into: Path) -> None:
        import ray

        joined = self.folder.work / "filters.input"
        shutil.rmtree(joined, ignore_errors=True)
        fetch.join_results(self.folder.stage_glob("ingest"), [fetch.write_results(d) for d in self.fetch_dirs()],
                           joined)
        ds = ray.data.read_parquet(str(joined)).map_batches(fetch.ApplyFetch(), batch_format="pyarrow")
        for record_filter in self.record_filters():
            ds = ds.map_batches(record_filter, batch_format="pyarrow")
        self.write(ds, into)
        shutil.rmtree(joined)

    def record_filters(self) -> list[Callable[[pa.Table], pa.Table]]:
        """The pipeline's filters, given the run's host rules and policy that the rights checks read."""
        return rights.bound(stages.configured(self.config.pipeline.filters), self.folder, self.policy)

    def score(self, into: Path) -> None:
        """CLIP embeddings, the heads and their thresholds, and perceptual hashes for dedup."""
        import ray

        settings = self.config.pipeline.scoring
        heads = EmbeddingHeads(settings)  # checks every weight file and shape before any image is read
        embeddings = self.folder.embeddings
        shutil.rmtree(embeddings, ignore_errors=True)  # an unfinished stage is redone whole
        models = self.model_stage("score", settings.batch_size, sharing=1)
        tasks = task_args(models)
        ds = (ray.data.read_parquet(str(self.folder.stage_dir(stages.FILTER_STEP)), **tasks)
              .map_batches(images.AttachImages(self.folder.fetch_root), batch_size=settings.batch_size,
                           batch_format="pyarrow", **tasks)
              .map_batches(ScoreImages, fn_constructor_args=(settings,), **models))
        self.write(ds.map_batches(images.drop_images, batch_format="pyarrow", **tasks)
                   .map_batches(heads, batch_format="pyarrow", **tasks)
                   .map_batches(store.EmbeddingWriter(embeddings), batch_format="pyarrow", **tasks)
                   .map_batches(ScoreThresholds(settings), batch_format="pyarrow", **tasks), into, tasks)

    def model_stage(self, name: str, batch_size: int, sharing: int) -> dict[str, Any]:
        """Ray arguments for a stage that holds a model: a pool of actors that each load it once."""
        import ray

        cluster = ray.cluster_resources()
        asked = self.config.pipeline.ray.stages.get(name, ActorResources())
        pool = actor_resources(asked, cluster.get("CPU", 1), cluster.get("GPU", 0), sharing)
        log.info("stage %s: %d-%d actors, %s CPU and %s GPU each, batches of %d", name, pool["min_size"],
                 pool["max_size"], pool["num_cpus"], pool["num_gpus"], batch_size)
        return {"compute": ray.data.ActorPoolStrategy(min_size=pool["min_size"], max_size=pool["max_size"]),
                "num_cpus": pool["num_cpus"], "num_gpus": pool["num_gpus"], "batch_size": batch_size,
                "batch_format": "pyarrow"}

    def dedup(self, into: Path) -> None:
        source = self.folder.stage_glob(self.before_dedup)
        found = duckdb.execute("SELECT DISTINCT license FROM read_parquet(?) WHERE license IS NOT NULL",
                               [source]).fetchall()
        ranks = {lic: self.policy.rank(lic) for (lic,) in found}
        priority = {s.source: s.priority for s in self.config.sources}
        settings = self.config.pipeline.dedup
        decisions = dedup.exact_decisions(source, ranks, priority) if settings.exact else dedup.empty_decisions()
        if settings.near.phash or settings.near.clip:
            near = dedup.near_decisions(source, self.folder.embeddings, ranks, priority, settings.near, decisions,
                                        spread=dedup.ray_map)
            decisions = pa.concat_tables([decisions, near])
        write_parquet_atomic(decisions, into / "decisions.parquet")

    def caption(self, into: Path) -> None:
        import ray

        captions = self.config.pipeline.captions
        joined = self.folder.work / "caption.input"
        shutil.rmtree(joined, ignore_errors=True)
        dedup.join_decisions(self.folder.stage_glob(self.before_dedup),
                             self.folder.stage_dir("dedup") / "decisions.parquet", joined)
        sharing = (captions.captioner is not None) + (captions.similarity is not None)
        pools = {name: self.model_stage(name, model.batch_size, sharing)
                 for name, model in (("captioner", captions.captioner), ("similarity", captions.similarity))
                 if model is not None}
        tasks = task_args(*pools.values())
        ds = (ray.data.read_parquet(str(joined), **tasks)
              .map_batches(dedup.ApplyDuplicates(), batch_format="pyarrow", **tasks))
        stored = self.stored_embeddings_for(captions.similarity)
        models = [m for m in (captions.captioner, captions.similarity if stored is None else None) if m is not None]
        uses_images = bool(models)
        if uses_images:  # batches of a model's size: a worker holds that many images, not a block's
            ds = ds.map_batches(images.AttachImages(self.folder.fetch_root), batch_format="pyarrow",
                                batch_size=min(m.batch_size for m in models), **tasks)
        if captions.captioner is not None:
            ds = ds.map_batches(captioner_class(captions.captioner.kind), fn_constructor_args=(captions,),
                                **pools["captioner"])
        ds = ds.map_batches(Captioner(captions, {s.source: s.adapter for s in self.config.sources}),
                            batch_format="pyarrow", **tasks)
        if captions.similarity is not None:
            ds = ds.map_batches(ClipSimilarity, fn_constructor_args=(captions.similarity, stored),
                                **pools["similarity"])
        if uses_images:
            ds = ds.map_batches(images.drop_images, batch_format="pyarrow", **tasks)
        self.write(ds, into, tasks)
        shutil.rmtree(joined)

    def stored_embeddings_for(self, similarity: SimilarityFilter | None) -> Path | None:
        """The run's embedding store when scoring embedded the images with the similarity filter's model.

        The same weights give the same image embedding, so the filter reads it instead of decoding
        and encoding every image again.
        """
        scoring = self.config.pipeline.scoring
        if similarity is None or scoring is None or similarity.model.describe() != scoring.clip.describe():
            return None
        return self.folder.embeddings

    def assign(self, into: Path) -> None:
        """Each record still pending gets its shard, by key order; its row is written under its shard's folder.

        Written partitioned by shard, so a shard writer reads its own rows only, and sorted by DuckDB,
        which spills to disk: no step holds the run's keys in memory.
        """
        duckdb.execute("""
            COPY (SELECT c.* REPLACE (printf(?, (row_number() OVER (ORDER BY c.key) - 1) // ?) AS shard)
                  FROM read_parquet(?) c WHERE c.status = ?)
            TO ? (FORMAT parquet, PARTITION_BY (shard))
        """, [shards.SHARD_FORMAT, self.config.pipeline.shards.samples_per_shard,
              self.folder.stage_glob("caption"), records.PENDING, str(into / SHARD_ROWS)])

    @property
    def shard_rows(self) -> Path:
        return self.folder.stage_dir("shards") / SHARD_ROWS

    def write_shards(self) -> list[str]:
        import ray

        names = sorted(p.name.removeprefix("shard=") for p in self.shard_rows.glob("shard=*"))
        writer = ShardWriter(self.folder.shards, self.shard_rows, self.folder.fetch_root)
        todo = [n for n in names if not shards.is_complete(self.folder.shards, n)]
        if not todo and "write" in self.times.steps:  # an earlier invocation wrote them all
            self.times.resumed("write")
            return names
        with self.times.timed("write") as self.timer:
            if todo:
                written = ray.data.from_items([{"shard": n} for n in todo]).map_batches(
                    writer, batch_size=1, batch_format="pyarrow").materialize()
                self.timer.add_cpu(ray_cpu_seconds(written))
        return names

    def write_manifest(self) -> None:
        """OUT/records: every input record once, in key order, pending ones now kept in their shard.

        Streamed by DuckDB from the caption step's records and the shard assignment into the
        manifest file, never held in this process.
        """
        con = duckdb.connect()
        if any(self.shard_rows.glob("shard=*")):
            con.register("assigned", con.read_parquet(f"{self.shard_rows}/*/*.parquet", hive_partitioning=True)
                         .select("key, shard"))
        else:  # a run that kept nothing has no shard folders
            con.execute("CREATE VIEW assigned AS SELECT NULL::VARCHAR AS key, NULL::VARCHAR AS shard WHERE false")
        left = con.execute("SELECT count(*) FROM read_parquet(?) c ANTI JOIN assigned a USING (key) "
                           "WHERE c.status = ?", [self.folder.stage_glob("caption"), records.PENDING]).fetchone()[0]
        if left:
            raise RuntimeError(f"{left} records left without a terminal status")
        with atomic_path(self.folder.manifest) as tmp:
            con.execute("""
                COPY (SELECT c.* REPLACE (
                          CASE WHEN a.shard IS NOT NULL THEN ? ELSE c.status END AS status,
                          CASE WHEN a.shard IS NOT NULL THEN 'shards' ELSE c.stage END AS stage,
                          a.shard AS shard)
                      FROM read_parquet(?) c LEFT JOIN assigned a USING (key)
                      ORDER BY c.key)
                TO ? (FORMAT parquet)
            """, [records.KEPT, self.folder.stage_glob("caption"), str(tmp)])


def task_args(*pools: dict[str, Any]) -> dict[str, float]:
    """What each task of a dataset that also runs these actor pools asks for.

    An actor of half a CPU leaves half a CPU free on its node. A task of one CPU fits on no
    such node, and on a cluster of small nodes (two nodes of one CPU, each holding one
    half-CPU actor) Ray Data then waits forever. So the dataset's tasks ask for the smallest
    share an actor takes, and fit wherever an actor does.
    """
    return {"num_cpus": min([1.0, *(pool["num_cpus"] for pool in pools)])}


def actor_resources(asked: ActorResources, cpus: float, gpus: float, sharing: int) -> dict[str, Any]:
    """A model stage's actor pool: what the pipeline asked, the rest derived from the cluster's resources.

    ``sharing`` model stages run at once in one dataset (the captioner and the similarity
    filter). With GPUs, each actor takes its share of one GPU and the pool grows to one
    actor per GPU. Without, each actor takes one CPU and the pool grows to a quarter of the
    cores per stage; on a machine of four cores or fewer one half-CPU actor each, since two
    1-CPU actors on 2 cores starve the read tasks and Ray Data stalls. Ray then runs torch
    with as many threads as the actor has CPUs.
    """
    if gpus:
        derived = {"num_gpus": 1 / sharing, "num_cpus": 1.0, "max_actors": max(1, int(gpus))}
    elif cpus <= 4:
        derived = {"num_gpus": 0.0, "num_cpus": 0.5, "max_actors": 1}
    else:
        derived = {"num_gpus": 0.0, "num_cpus": 1.0, "max_actors": max(1, int(cpus) // (4 * sharing))}
    chosen = {**derived, **asked.model_dump(exclude_none=True)}
    low = chosen.get("min_actors", 1)
    return {"min_size": low, "max_size": max(low, chosen["max_actors"]),
            "num_cpus": chosen["num_cpus"], "num_gpus": chosen["num_gpus"]}


def ray_cpu_seconds(ds: Any) -> float:
    """The CPU time the tasks of an executed Ray dataset took, from Ray Data's per-operator stats."""
    summaries, total, seen = [ds.get_stats_summary()], 0.0, set()
    while summaries:
        summary = summaries.pop()
        if summary.dataset_uuid in seen:
            continue
        seen.add(summary.dataset_uuid)
        total += sum(op.cpu_time.sum for op in summary.operators_stats if op.cpu_time and not op.is_sub_operator)
        summaries += summary.parents
    return total


class ShardWriter:
    """Ray stage: a batch of one shard name -> that shard written from its own rows (skipped if complete)."""

    def __init__(self, shards_dir: Path, shard_rows: Path, fetch_root: Path):
        self.shards_dir, self.shard_rows, self.fetch_root = shards_dir, shard_rows, fetch_root

    def __call__(self, batch: pa.Table) -> pa.Table:
        name = batch["shard"][0].as_py()
        rows = records.conform(pq.read_table(self.shard_rows / f"shard={name}")).to_pylist()
        shards.write_shard(self.shards_dir, name, rows, fetch.read_located(self.fetch_root, rows))
        return pa.table({"shard": [name], "samples": [len(rows)]})
