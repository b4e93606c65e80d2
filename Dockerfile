# The coldcast platform image: every task of the training and monitoring pipelines runs in it.
#   docker build -t REGISTRY/coldcast/platform:0.1.0 .
#   docker push REGISTRY/coldcast/platform:0.1.0
#   coldcast compile --image REGISTRY/coldcast/platform:0.1.0
# The package is installed with the same pinned constraints as `make venv`, so a task on a cluster runs the
# versions the tests ran. kfp is one of the dependencies: the components install nothing when they start.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    BENTOML_DO_NOT_TRACK=true \
    DO_NOT_TRACK=1 \
    GX_ANALYTICS_ENABLED=false

WORKDIR /opt/coldcast
# Dependencies first, from pyproject.toml pinned by constraints.txt (this layer is reused while only the code
# changes), then the package itself without touching them.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt -c constraints.txt \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY coldcast ./coldcast
RUN pip install --no-deps . && pip check

# Tasks run as an unprivileged user; BentoML keeps its store in the user's home.
RUN useradd --create-home --uid 1000 coldcast
USER coldcast
ENV BENTOML_HOME=/home/coldcast/bentoml
CMD ["coldcast", "--help"]
