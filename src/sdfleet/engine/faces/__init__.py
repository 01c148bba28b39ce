"""Face restoration, as A1111 does it after generation and in Extras: find the faces (:mod:`.detect`: OpenCV's
Haar cascade, or YuNet when its ONNX file is registered), align each to the FFHQ 512×512 crop the
restorers were trained on (:mod:`.align`), restore it (:mod:`.restore`: GFPGAN or CodeFormer through
spandrel), and paste it back through a feathered mask. :func:`.extras.restore_for_extras` is the Extras
step. No facexlib, basicsr or gfpgan: OpenCV and numpy do the geometry."""
