#include "model/torch_compat.h"

namespace caddie::model {

std::string TorchVersionString() { return TORCH_VERSION; }

}  // namespace caddie::model
