import accel


def test_public_api_is_curated_and_sorted() -> None:
    exported = accel.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(accel, name), name
    public = {n for n in dir(accel) if not n.startswith("_")}
    # Sub-packages appear as attributes once imported; everything else must be in __all__.
    stray = (
        public
        - set(exported)
        - {
            "errors",
            "schema",
            "units",
            "hub",
            "fetch",
            "manager",
            "node",
            "cli",
            "durable",
            "meter",
            "config",
        }
        - {"listener"}  # the HTTP listener limits shared by the hub and the node
        - {"limits"}  # their value, apart so that the CLI starts without aiohttp
        - {"modelid"}  # model ids (name, org/name) and their directory names, hub and node
        - {"serving"}  # server-side HTTP rules shared by the hub and the peer server
        - {"blockmap"}  # the ?have bitmap of held blocks, peer server and engine
    )
    assert not stray, stray


def test_cli_lists_subcommands() -> None:
    from accel.cli import build_parser

    help_text = build_parser().format_help()
    assert "COMMAND" in help_text
