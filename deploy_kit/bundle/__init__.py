"""Air-gapped bundles: one plain tar that carries a whole deployment to a server with no network.

Layout (members in this order; PAX tar, uncompressed: images and safetensors do not compress):

    bundle.json                 head: target, image ids and architectures, cards, deployments
    images/<i>/...              the members of `docker save <ref>` (image i), re-rooted
    weights/<card>/...          the cache directory at its locked revision, with its manifest
    rendered/<deployment>/...   the files `deploykit render` wrote on the bundling host
    cards/<card>.yaml           the card source (digest recorded in the head)
    wheels/*.whl                deploykit and its dependency wheels (`pip install --no-index`)
    manifest.json               the head + every member above with size and sha256
    manifest.sha256             sha256 of manifest.json (a flipped byte there is named too)

The manifest comes last because the sizes of `docker save` output are known only while it
streams; `load` therefore reads the bundle twice (verify everything, then install), never
holding a member in memory or writing a second copy of it.
"""
