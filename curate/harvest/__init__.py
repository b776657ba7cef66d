"""Harvesting sources from their public APIs into the files their adapters read.

One module per source, named for its adapter; ``curate.harvest.pull`` drives them, with
``curate.harvest.client`` (polite HTTP) and ``curate.harvest.cursor`` (resumable). This
package module stays import-free so that ``curate.config`` can read the settings cheaply.
"""

HARVESTERS = {
    "commons": "curate.harvest.commons",
    "met": "curate.harvest.met",
    "cleveland": "curate.harvest.cleveland",
    "aic": "curate.harvest.aic",
    "smithsonian": "curate.harvest.smithsonian",
    "finna": "curate.harvest.finna",
    "flickr": "curate.harvest.flickr",
    "nga": "curate.harvest.nga",
    "walters": "curate.harvest.walters",
    "getty": "curate.harvest.getty",
}
