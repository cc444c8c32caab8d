#!/usr/bin/env bash
# Planned for issue 12's next H200 lease (written in session 8, NOT run yet): session 8's pipeline
# (gpu_s8.sh) with what that lease taught.
#   bash results/h200/session8/gpu_next.sh start              launch the pipeline (scripts/gpu_pipeline.sh)
#   bash results/h200/session8/gpu_next.sh harvest S MARK     wait up to S seconds for $W/MARK (or $W/stop), then
#                                                             pack the small result files into $OUT/s9.tgz
# Issue the calls back to back, reading nothing in between: session 8's third call came ~4 minutes late, found a
# fresh machine and waited 560 s for a marker of a pipeline that was gone. `harvest` now says so at once.
#   call 1: start && harvest 545 unet_done      call 2: harvest 570 warm_done      call 3: harvest 570 uu_done
#   call 4 (what is left, ~250 s): harvest T done
# The pipeline runs each job alone on the GPU, one after the other:
#   1. mamba-ssm builds (nice 19, in the background: CPU only) while the U-Net + Dice/CE + SGD race run trains
#      (budget harness, 8 training minutes, eager, batch 32: sessions 5, 7 and 8's command)  -> mark unet_done
#   2. tests/test_cuda_paths.py (the fused paths against their references, budget.yaml's compiled layout
#      among them), then compiled 3D step rows, paper plan batch 4, channels-last + instance_in_layout (U-Mamba
#      Enc SAM, SGD), with inductor's mix-order reduction off: with it on, torch 2.11's inductor stopped at
#      "AssertionError: 32 v.s. 128" (MixOrderReduction.get_numel_rnumel) in session 8       -> mark rows3d_done
#   3. one warm-up run of budget.yaml as committed (channels-last + instance_in_layout since session 8), stopped
#      after 4 epochs: it fills the inductor cache for the race, as in session 7             -> mark warm_done
#   4. the UU-Mamba race run: budget.yaml, 8 training minutes                                -> mark uu_done
#   5. compiled 2D step rows at batch 32, channels-last + instance_in_layout (U-Net SGD, U-Mamba Enc SGD, SAM),
#      then the same in NCHW, while time is left: the ratio targets, best mode of each       -> mark done
set -u
cd "$(dirname "$0")/../../.."
TAG=s9 RUNS="unet8 uu8 warm_budget" DATA=.cache/acdc.uucache.npz
. scripts/gpu_pipeline.sh
pipeline() {
  nvidia-smi --query-gpu=name,memory.used,utilization.gpu,clocks.max.sm --format=csv,noheader
  setsid nohup nice -n 19 bash scripts/build_mamba.sh > $W/build.log 2>&1 < /dev/null &
  el "build started; U-Net race run (8 training minutes)"
  timeout 640 python3 -m uu train --params budget --data $DATA --out $W/unet8 --set arch=unet --set loss=dice_ce \
    --set optimizer=sgd --set batch_size=32 --set compile=false --set max_minutes=8 > $W/unet8.log 2>&1
  tail -2 $W/unet8.log; touch $W/unet_done; el "U-Net run done"
  while ! grep -q "built in\|FAILED\|already" $W/build.log 2>/dev/null; do sleep 2; done; tail -1 $W/build.log
  python3 -c "import torch, selective_scan_cuda, mamba_ssm; print('[s9] mamba_ssm', mamba_ssm.__version__)" \
    || { el "NO KERNEL: stopping"; touch $W/stop; return; }
  timeout 240 python3 -m pytest -q -s -p no:cacheprovider tests/test_cuda_paths.py > $W/cuda_paths.log 2>&1
  grep "cuda paths\]\|passed\|failed" $W/cuda_paths.log; el "CUDA path tests done"
  CLI="--channels-last --norm instance_in_layout"
  steps 3d 4 umamba_enc:sam,umamba_enc:sgd 330 3d_cl_inl "$CLI" 3d_cl_inl 0; touch $W/rows3d_done; el "3D rows done"
  warm true instance_in_layout warm_budget; touch $W/warm_done
  el "UU-Mamba race run (8 training minutes, budget.yaml as committed)"
  timeout 700 python3 -m uu train --params budget --data $DATA --out $W/uu8 --set max_minutes=8 > $W/uu8.log 2>&1
  tail -2 $W/uu8.log; touch $W/uu_done; el "UU-Mamba run done"
  steps 2d 32 unet:sgd,umamba_enc:sgd,umamba_enc:sam 300 2d_cl_inl "$CLI" 2d_cl_inl; el "2D channels-last rows done"
  steps 2d 32 unet:sgd,umamba_enc:sgd,umamba_enc:sam 300 2d_nchw "" 2d_nchw; el "2D NCHW rows done"
  touch $W/done
}
pipeline_main "$@"
