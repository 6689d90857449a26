"""Kill switches (docs/operations.md, "Kill switches"): what a switch can cover (`targets`), the
engaged ones in SQLite (`store`), the ones in force on this worker (`board`, read by the
pipeline's `switches` stage and by approved actions before they execute) and
`callgate switch` (`commands`). The admin routes that engage and lift them are in
`gateway/admin/switches.py`."""
