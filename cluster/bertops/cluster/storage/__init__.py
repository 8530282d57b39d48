"""A real S3 server for the embedded cluster: VersityGW (Apache-2.0, an S3 gateway in front
of a local folder) built from its Go module (``build``) and run on loopback with
generated credentials (``run``). Used by ``bertops cluster storage up|down`` and the tests
that read and write ``s3://`` artifacts.
"""
