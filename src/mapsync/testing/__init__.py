"""Dev-only parts: what tests, benchmarks and the demo use, never the product itself.

- `fakes`: an in-memory source, capture and engine over a sheet (`memory_destination`: the
  in-memory destination with fault injection);
- `fault_proxy` (TCP faults in front of a database), `fault_server` (a fault-injecting HTTP
  server), `canary` (grep every artifact of a run for planted secrets);
- `sandbox` (+ `sandbox_store`, `sandbox_search`): a local stand-in for the CIMcloud API
  (`mapsync sandbox`);
- `demo_data`: the sample ERP and portal of `mapsync demo`.

The layers contract in pyproject.toml puts this package above the engine; a `forbidden`
contract keeps every product module (all but the CLI and the demo) from importing it. Nothing
is imported here: each module loads only what it needs (the sandbox needs FastAPI).
"""
