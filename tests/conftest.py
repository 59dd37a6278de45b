pytest_plugins = ["agg_testkit.pytest_plugin"]
