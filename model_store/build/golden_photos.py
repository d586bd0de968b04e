"""The committed test photos (tests/data/images) that the torchvision goldens are built on and tested with.

Named one by one: a file someone leaves in that folder (the README's examples once wrote their outputs
there) must change neither what is built nor what is tested.
"""

PHOTOS = (
    "bird.png", "bird_segmentation.png", "cat.png", "cat_720p.jpg", "dog_segmentation.png", "dragonfly.png",
    "grace_hopper.png", "hot_dog.jpg", "owl.jpg", "parrot.jpg", "pets.jpg", "sunflower.png",
)  # fmt: skip
