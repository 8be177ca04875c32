"""The project's contract names, importable without torch, Ray or pandas.

One owner for each shared name: metric names (`contract.metrics`), Parquet files, columns,
statuses and metadata keys (`contract.columns`), error types (`contract.errors`). Other
tools read these names from the Parquet files; the spec validator and the results commands
import them without paying for torch (seconds) or Ray.
"""
