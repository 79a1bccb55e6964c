"""The models: the course's (`course`), torchvision's with their pretrained weights (`vision`),
and your own code, model and Dataset, run only by consent (`usercode`); `layers` prints one."""
