#!/usr/bin/env bash
# Session 8 (issue 12) on the lent H200: one background pipeline, harvested by chained device calls.
#   bash results/h200/session8/gpu_s8.sh start              launch the pipeline (scripts/gpu_pipeline.sh)
#   bash results/h200/session8/gpu_s8.sh harvest S MARK     wait up to S seconds for $W/MARK (or $W/stop), then
#                                                           pack the small result files into $OUT/s8.tgz
# The pipeline runs each job alone on the GPU, one after the other:
#   1. mamba-ssm builds (nice 19, in the background: CPU only) while the U-Net + Dice/CE + SGD race run trains
#      (budget harness, 8 training minutes, eager, batch 32: session 5's and 7's command)   -> mark unet_done
#   2. compiled step rows, 3D paper plan batch 4, channels-last with norm instance_in_layout (U-Mamba Enc SAM,
#      SGD): the 350 ms target                                                               -> mark rows3d_done
#   3. two short warm-up runs of budget.yaml, each stopped after 4 epochs: channels-last + instance_in_layout,
#      then NCHW + nn.InstanceNorm (the committed profile); torch.compile's warm-up with an empty inductor cache
#      (timed), then the steady-state it/s of each; the faster layout is kept for the race    -> mark warm_done
#   4. the UU-Mamba race run: budget.yaml, 8 training minutes, that layout, the inductor cache now warm
#                                                                                            -> mark uu_done
#   5. compiled 2D step rows at batch 32 in channels-last + instance_in_layout (U-Net SGD, U-Mamba Enc SGD,
#      SAM) while time is left: the ratio targets                                            -> mark done
set -u
cd "$(dirname "$0")/../../.."
TAG=s8 RUNS="unet8 uu8 warm_cl_inl warm_nchw" DATA=.cache/acdc.uucache.npz
. scripts/gpu_pipeline.sh
pipeline() {
  nvidia-smi --query-gpu=name,memory.used,utilization.gpu,clocks.max.sm --format=csv,noheader
  setsid nohup nice -n 19 bash scripts/build_mamba.sh > $W/build.log 2>&1 < /dev/null &
  el "build started; U-Net race run (8 training minutes)"
  timeout 640 python3 -m uu train --params budget --data $DATA --out $W/unet8 --set arch=unet --set loss=dice_ce \
    --set optimizer=sgd --set batch_size=32 --set compile=false --set max_minutes=8 > $W/unet8.log 2>&1
  tail -2 $W/unet8.log; touch $W/unet_done; el "U-Net run done"
  while ! grep -q "built in\|FAILED\|already" $W/build.log 2>/dev/null; do sleep 2; done; tail -1 $W/build.log
  python3 -c "import torch, selective_scan_cuda, mamba_ssm; print('[s8] mamba_ssm', mamba_ssm.__version__)" \
    || { el "NO KERNEL: stopping"; touch $W/stop; return; }
  CLI="--channels-last --norm instance_in_layout"
  steps 3d 4 umamba_enc:sam,umamba_enc:sgd 330 3d_cl_inl "$CLI" cl_inl; touch $W/rows3d_done; el "3D rows done"
  warm true instance_in_layout warm_cl_inl; warm false instance warm_nchw
  read cl_its _ < <(rates $W/warm_cl_inl 2>/dev/null || echo 0); read nc_its _ < <(rates $W/warm_nchw 2>/dev/null || echo 0)
  if python3 -c "import sys; sys.exit(0 if $cl_its > 1.02 * $nc_its else 1)"; then CL=true NORM=instance_in_layout
  else CL=false NORM=instance; fi
  echo "channels_last=$CL norm=$NORM (it/s: channels-last + instance_in_layout $cl_its, NCHW $nc_its)" \
    | tee $W/decision.txt; touch $W/warm_done
  el "UU-Mamba race run (8 training minutes, channels_last=$CL norm=$NORM)"
  timeout 700 python3 -m uu train --params budget --data $DATA --out $W/uu8 --set max_minutes=8 \
    --set channels_last=$CL --set norm=$NORM > $W/uu8.log 2>&1
  tail -2 $W/uu8.log; touch $W/uu_done; el "UU-Mamba run done"
  steps 2d 32 unet:sgd,umamba_enc:sgd,umamba_enc:sam 300 2d_cl_inl "$CLI" cl_inl; el "2D rows done"
  touch $W/done
}
pipeline_main "$@"
