"""The package face: the calls a notebook uses resolve to functions, even after sub-modules are imported."""

import satqkd


def test_face_names_are_callables():
    import satqkd.jobs.pass_simulation  # noqa: F401 - importing the module must not shadow the function
    import satqkd.postprocess.sifting  # noqa: F401
    import satqkd.protocol.session  # noqa: F401

    for name in ("load_preset", "find_pass", "simulate", "postprocess_pass", "link_budget_db", "load_raw", "save_raw"):
        assert callable(getattr(satqkd, name)), name
    assert satqkd.load_preset("micius-2016-12-19").name == "micius-2016-12-19"
