"""Where the default data, weights and results live (``ROOT``): shared by training, inference and the tools."""
import os

__all__ = ['ROOT', 'project_root']


def project_root():
    """$SBVSR_ROOT if set; else the source checkout the package runs from (``pip install -e .``
    or the scripts); else, for a package installed into site-packages (``pip install .``), the
    current folder: never site-packages."""
    if os.environ.get('SBVSR_ROOT'):
        return os.path.abspath(os.environ['SBVSR_ROOT'])
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(checkout, 'pyproject.toml')):
        return checkout
    return os.getcwd()


ROOT = project_root()
