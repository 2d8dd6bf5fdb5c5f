"""Alibaba OSS on the official oss2 SDK, in layers: paths (oss:// names),
credentials (environment, ossutil config, STS roles), client (one oss2.Bucket
per bucket and process, retries, errors as storage types), io (objects,
listings, copies, streams) and filesystem (the Beam FileSystem, registered
for oss:// by importing it; workers get it from --beam_plugins).

Credentials are resolved in each process from its environment, never from
pipeline options, so no secret travels in a job graph.
"""
