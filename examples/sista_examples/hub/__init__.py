# Copyright 2026 The SISTA Authors. Licensed under the Apache License, Version 2.0.
