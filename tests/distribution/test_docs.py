"""What admins copy and read stays true: the README's reference and hub_config/ come from the code."""

from __future__ import annotations

from pathlib import Path

from jupyter_securehpc.config import SecureHPC, load_config
from jupyter_securehpc.config_reference import END, START, reference
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig

ROOT = Path(__file__).resolve().parents[2]


def test_readme_configuration_reference_is_generated_from_the_traits():
    readme = (ROOT / "README.md").read_text()
    assert START in readme and END in readme, "README lacks the configuration reference markers"
    section = readme[readme.index(START) : readme.index(END) + len(END)]
    assert section == reference(), "run `securehpc config-reference` and paste it into the README"


def test_site_config_example_loads():
    config = load_config(ROOT / "hub_config" / "securehpc_config.py")
    settings = SecureHPC(config=config)
    assert settings.store_root == "/gpfs/secure/securehpc/stores"
    assert KeyStoreConfig(config=config).url == "https://openbao.example.org:8200"


def test_openbao_hub_policy_example_is_current():
    policy = KeyStore(KeyStoreConfig(url="http://127.0.0.1:1", token="")).hub_policy()
    assert (ROOT / "hub_config" / "openbao-hub-policy.hcl").read_text() == policy


def test_hub_config_example_names_real_settings(monkeypatch):
    """Every setting the example sets exists on its class (a typo would be silently ignored by JupyterHub)."""
    from traitlets.config import PyFileConfigLoader

    from jupyter_securehpc.authenticator import SecureHPCAuthenticator
    from jupyter_securehpc.runs.hub import SecureRuns
    from jupyter_securehpc.spawner.spawner import SecureSlurmSpawner

    monkeypatch.setenv("OIDC_CLIENT_SECRET", "not-a-real-secret")
    path = ROOT / "hub_config" / "jupyterhub_config.py"
    config = PyFileConfigLoader(path.name, path=str(path.parent)).load_config()
    from jupyterhub.app import JupyterHub
    from jupyterhub.proxy import ConfigurableHTTPProxy

    classes = {
        "JupyterHub": JupyterHub,
        "ConfigurableHTTPProxy": ConfigurableHTTPProxy,
        "SecureHPCAuthenticator": SecureHPCAuthenticator,
        "SecureSlurmSpawner": SecureSlurmSpawner,
        "SecureRuns": SecureRuns,
    }
    for section, values in config.items():
        traits = classes[section].class_traits(config=True)
        for name in values:
            assert name in traits, f"{section}.{name} is not a setting of {classes[section].__name__}"
