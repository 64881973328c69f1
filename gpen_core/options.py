"""The choices every front end offers (command line, ComfyUI, WebUI), defined once. Imports nothing heavy."""

#: Face detectors: RetinaFace when its weights are found, else the built-in MTCNN; or either one.
DETECTORS = ("auto", "retinaface", "mtcnn")
#: Which faces to restore: all, only the largest, only the one nearest the image centre.
SELECT_MODES = ("all", "largest", "center")
#: Paste masks: face parsing when its weights are found, else GPEN's soft rectangle; or either one.
MASK_KINDS = ("auto", "parsing", "rectangle")
#: Network precisions; "auto" is float32.
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
#: GPEN tasks on aligned crops; "auto" takes the task from the model's official file name (else restore).
TASK_CHOICES = ("auto", "restore", "colorize", "inpaint", "seg2face")
