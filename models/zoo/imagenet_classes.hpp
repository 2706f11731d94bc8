#pragma once
// ImageNet's 1000 class names in the models' output order (index 0 "tench" .. 999 "toilet
// tissue"), for the zoo's ImageNet models (vgg11..vgg19, *_bn). The list is
// models/zoo/imagenet_classes.txt (one name per line; from pytorch/hub's imagenet_classes.txt, BSD-3),
// compiled into the library and installed as share/cudl/imagenet_classes.txt, where it also
// serves as a --labels file.
#include <string>
#include <vector>

namespace cudl {

const std::vector<std::string>& imagenet_class_names();

// The names for a classifier with `classes` outputs when nothing better is known: ImageNet's for
// 1000, else none (the caller prints indices).
std::vector<std::string> default_class_names(int classes);

}  // namespace cudl
